// The features on a fake DOM: one page context in, one registry shape out; controls write to
// the store and are drawn from it; busy and the colour metric go through the store.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createControls } from '../../llmvis/web/static/js/controls.js';
import { createCoreViews } from '../../llmvis/web/static/js/core.js';
import { createEstimate } from '../../llmvis/web/static/js/estimate.js';
import { createInsights } from '../../llmvis/web/static/js/insights.js';
import { createInteractive } from '../../llmvis/web/static/js/interactive.js';
import { createKeeper } from '../../llmvis/web/static/js/keep.js';
import { createRegistry } from '../../llmvis/web/static/js/registry.js';
import { initialState } from '../../llmvis/web/static/js/state.js';
import { createStore } from '../../llmvis/web/static/js/store.js';
import { fakeDoc, t } from './helpers.mjs';

const FEATURES = [createControls, createEstimate, createCoreViews, createInsights, createInteractive, createKeeper];

/** A fake API: every method records its arguments and answers from `answers` (or {}). */
function fakeApi(answers = {}) {
  const calls = [];
  const api = new Proxy({}, {
    get: (_, name) => (...args) => {
      calls.push([name, ...args]);
      return Promise.resolve(typeof answers[name] === 'function' ? answers[name](...args) : answers[name] ?? {});
    },
  });
  return { api, calls };
}

function makePage(answers) {
  const doc = fakeDoc();
  const store = createStore(initialState());
  const { api, calls } = fakeApi({
    history: { enabled: true, runs: [], total: 0, total_bytes: 0, budget_bytes: 0 },
    ...answers,
  });
  const shown = [];
  const page = {
    doc, win: doc.defaultView, api, i18n: { t, lang: 'en' }, t, store, echarts: null,
    conversation: { render() {}, select() {}, setMetric() {}, legend: () => ({}) },
    chart: () => null,
    select: (pos) => store.set({ selected: pos }),
    showRun: (run, opts) => shown.push([run, opts]),
    showError: (msg) => store.set({ error: msg }),
    clearError: () => store.set({ error: '' }),
  };
  const registry = createRegistry();
  for (const create of FEATURES) registry.register(create(page));
  return { doc, store, calls, shown, registry, $: (id) => doc.getElementById(id) };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

test('every feature registers the one shape; the views come in tab order', () => {
  const { registry } = makePage();
  assert.deepEqual(registry.names(), ['controls', 'estimate', 'core', 'insights', 'interactive', 'keep']);
  assert.deepEqual(registry.views(), ['attention', 'probs', 'entropy', 'similarity', 'projection', 'lens', 'heads', 'sampler', 'diff']);
});

test('every watched key is a key of the page state', () => {
  const { registry } = makePage();
  const keys = new Set(Object.keys(initialState()));
  for (const k of registry.watched()) assert.ok(keys.has(k), `watched key ${k} is not in initialState`);
  assert.ok(registry.watched().has('run') && registry.watched().has('lensMetric') && registry.watched().has('diffA'));
});

test('a toolbar select writes the store; the store draws the select', () => {
  const { store, $ } = makePage();
  const layer = $('layer-select');
  layer.value = '7';
  layer.fire('change');
  assert.equal(store.get().layer, 7);
  const head = $('head-select');
  head.value = 'max';
  head.fire('change');
  assert.equal(store.get().head, 'max');
  head.value = '4';
  head.fire('change');
  assert.equal(store.get().head, 4);
  const lens = $('lens-metric-select');
  lens.value = 'rank';
  lens.fire('change');
  assert.equal(store.get().lensMetric, 'rank');
  store.set({ layer: 2, head: 'mean', rowHead: 3 }); // e.g. a click on the heads grid
  assert.equal(layer.value, '2');
  assert.equal(head.value, 'mean');
  assert.equal($('row-head-select').value, '3');
});

test('the heads mode shows its own controls only', () => {
  const { store, doc } = makePage();
  const grid = doc.createElement('select');
  grid.dataset.headsMode = 'grid';
  const row = doc.createElement('select');
  row.dataset.headsMode = 'row';
  doc.querySelectorAll = (sel) => (sel === '[data-heads-mode]' ? [grid, row] : []);
  store.set({ headsMode: 'row' });
  assert.deepEqual([grid.hidden, row.hidden], [true, false]);
});

test('the form goes into the store on input, and the store draws the form back', () => {
  const { store, $ } = makePage();
  assert.deepEqual(store.get().form, { prompt: '', system: '', temperature: '', top_k: '', top_p: '', max_new_tokens: '', seed: '' });
  $('prompt').value = 'Hello';
  $('gen-form').fire('input', { target: $('prompt') });
  assert.equal(store.get().form.prompt, 'Hello');
  const range = $('temperature-range');
  range.value = '1.2';
  $('gen-form').fire('input', { target: range });
  assert.equal(store.get().form.temperature, '1.2', 'the slider that moved wins');
  assert.equal($('temperature').value, '1.2', 'and the number box follows it');
  store.set({ lastSeed: 42 });
  assert.equal($('seed-last').hidden, false);
  assert.equal($('seed-last').textContent, '↺ 42');
  $('seed-last').fire('click');
  assert.equal(store.get().form.seed, '42');
  assert.equal($('seed').value, '42');
});

test('the model caps max new tokens in the store and the inputs', () => {
  const { store, $ } = makePage();
  store.set({ form: { ...store.get().form, max_new_tokens: '900' } });
  store.set({ model: { name: 'tiny', num_layers: 2, num_heads: 2, limits: { max_new_tokens: 512 } } });
  assert.equal(store.get().form.max_new_tokens, '512');
  assert.equal($('max-new-tokens').value, '512');
  assert.equal($('max-new-tokens').max, '512');
});

test('busy lives in the store; body[data-busy] is only a render of it', () => {
  const { store, doc, $ } = makePage();
  assert.equal(doc.body.dataset.busy, 'false');
  store.set({ busy: 'score' });
  assert.equal(doc.body.dataset.busy, 'true');
  assert.equal($('generate').disabled, true);
  assert.equal($('busy').hidden, false);
  assert.equal($('score-submit').disabled, true);
  assert.equal($('score-busy').hidden, false);
  doc.body.dataset.busy = 'false'; // writing the attribute changes nothing: it is never read
  assert.equal(store.get().busy, 'score');
  store.set({ busy: null });
  assert.equal(doc.body.dataset.busy, 'false');
  assert.equal($('generate').disabled, false);
  assert.equal($('score-busy').hidden, true);
});

test('errors are store state drawn in the error line', () => {
  const { store, $ } = makePage();
  store.set({ error: 'prompt: must not be empty' });
  assert.equal($('error').textContent, 'prompt: must not be empty');
  assert.equal($('error').classList.contains('visible'), true);
  store.set({ error: '' });
  assert.equal($('error').classList.contains('visible'), false);
});

test('scoring a text sets the GLTR colours through the store and shows the run', async () => {
  const run = { run_id: 's1', kind: 'score', tokens: [] };
  const { store, calls, shown, $ } = makePage({ score: run });
  $('score-text').value = 'Some text';
  $('score-text').fire('input');
  $('score-chat-template').checked = true;
  $('score-chat-template').fire('change');
  $('score-submit').fire('click');
  await settle();
  assert.deepEqual(calls.find((c) => c[0] === 'score'), ['score', { text: 'Some text', use_chat_template: true }]);
  assert.equal(store.get().metric, 'gltr');
  assert.deepEqual(shown, [[run, {}]]);
  assert.equal(store.get().busy, null);
});

test('scoring nothing is refused with an error, and nothing is sent', async () => {
  const { store, calls, $ } = makePage();
  $('score-submit').fire('click');
  await settle();
  assert.equal(store.get().error, 'err.emptyScoreText');
  assert.equal(calls.some((c) => c[0] === 'score'), false);
});

test('a click on a candidate bar of a scored text forks with the form\'s settings', async () => {
  const child = { run_id: 'f1', kind: 'fork', tokens: [] };
  const { store, calls, shown, registry } = makePage({ forkStream: child });
  store.set({
    run: { run_id: 's1', kind: 'score', tokens: [] },
    form: { prompt: '', system: '', temperature: '0.3', top_k: '5', top_p: '0.9', max_new_tokens: '12', seed: '' },
  });
  const handled = registry.click({ data: { tokenId: 9 } }, { view: 'probs', meta: { position: 3, 'chosen-id': 1 } }, {});
  assert.equal(handled, true);
  await settle();
  assert.deepEqual(calls.find((c) => c[0] === 'forkStream').slice(0, 2), ['forkStream', {
    run_id: 's1', position: 3, token_id: 9, temperature: 0.3, top_k: 5, top_p: 0.9, max_new_tokens: 12,
  }], 'streamed, with the form\'s settings');
  assert.deepEqual(shown, [[child, { select: 3 }]]);
  assert.equal(registry.click({ data: { tokenId: 1 } }, { view: 'probs', meta: { position: 3, 'chosen-id': 1 } }, {}), true,
    'the chosen token itself: handled, no fork');
  assert.equal(calls.filter((c) => c[0] === 'forkStream').length, 1);
});

test('chart clicks: a lens cell and the entropy canvas select; a head cell opens it in attention', () => {
  const { store, registry } = makePage();
  const selected = [];
  const ctx = { select: (p) => selected.push(p), gridCoord: () => [3.6, 0.2] };
  assert.equal(registry.click({ seriesId: 'lens', data: [2, 5] }, { view: 'lens', meta: { start: 10 } }, ctx), true);
  assert.equal(registry.click({ source: 'canvas', point: [10, 10] }, { view: 'entropy', meta: {} }, ctx), true);
  assert.deepEqual(selected, [12, 4]);
  assert.equal(registry.click({ seriesId: 'heads', data: [4, 2, 0.1] }, { view: 'heads', meta: {} }, ctx), true);
  assert.deepEqual([store.get().layer, store.get().head, store.get().view], [2, 4, 'attention']);
  assert.equal(registry.click({ source: 'canvas', point: [1, 1] }, { view: 'probs', meta: {} }, ctx), false);
});

test('export names come from the feature that owns the view', () => {
  const { registry } = makePage();
  const s = { ...initialState(), layer: 3, selected: 8, lensRange: 'all' };
  assert.equal(registry.exportDetail('attention', s), 'L3-mean');
  assert.equal(registry.exportDetail('lens', s), 'prob-all');
  assert.equal(registry.exportDetail('sampler', s), 'pos8');
  assert.equal(registry.exportDetail('diff', s), 'kl');
});

test('loaders read their settings from ctx.state and ask the API for them', async () => {
  const attention = { layer: 1, head: 2, num_tokens: 1, matrix: [[1]], tokens: ['a'] };
  const { registry, calls } = makePage({ attention, tokenProbs: {} });
  const run = { run_id: 'r1', tokens: Array.from({ length: 300 }, (_, i) => ({ position: i })) };
  const state = { ...initialState(), layer: 1, head: 2, attnRange: 'window', selected: 200 };
  const built = await registry.load('attention', run, { t, state, selected: 200 });
  assert.deepEqual(calls.find((c) => c[0] === 'attention'), ['attention', 'r1', 1, 2, { q_start: 96, q_end: 224, k_start: 96, k_end: 224 }]);
  assert.equal(built.meta.layer, 1);
  const msg = await registry.load('probs', run, { t, state: { ...state, selected: 0 }, selected: 0 });
  assert.deepEqual(msg, { message: 'view.pickToken' });
  assert.equal(calls.some((c) => c[0] === 'tokenProbs'), false, 'position 0 has no prediction to ask for');
});

test('a run on show registers in the session, with the default diff pair', () => {
  const { store, registry } = makePage();
  const g1 = { run_id: 'g1', kind: 'generate', tokens: [], num_prompt_tokens: 0 };
  const g2 = { run_id: 'g2', kind: 'generate', tokens: [], num_prompt_tokens: 0 };
  for (const run of [g1, g2]) {
    store.set({ run });
    registry.emit('onRun', run);
  }
  assert.deepEqual([...store.get().sessionRuns.keys()], ['g1', 'g2']);
  assert.deepEqual([store.get().diffA, store.get().diffB], ['g1', 'g2']);
  assert.deepEqual(store.get().segments, { runId: 'g2', list: [] });
});

test('the history list is store state; each load counts', async () => {
  const rows = [{ run_id: 'ab12cd34', title: 'A run', num_tokens: 9, created: 0, same_model: true, model: 'm' }];
  const { store, registry, $ } = makePage({ history: { enabled: true, runs: rows, total: 1, total_bytes: 2048, budget_bytes: 1024 ** 3 } });
  const run = { run_id: 'ab12cd34', kind: 'generate', tokens: [], num_prompt_tokens: 0 };
  store.set({ run });
  registry.emit('onRun', run);
  await settle();
  assert.deepEqual(store.get().history.rows, rows);
  assert.deepEqual(store.get().history.usage, { total: 1, used: 2048, budget: 1024 ** 3 });
  assert.equal($('history-list').dataset.loaded, '1');
  assert.equal($('history-list').children.length, 1);
  assert.equal($('history-note').textContent, t('history.usage', { count: 1, used: '2.0 KB', budget: '1.0 GB' }));
  assert.equal($('export-run').disabled, false);
});
