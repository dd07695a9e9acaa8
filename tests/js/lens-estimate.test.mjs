// The Layers tab's loader on a long run (fake DOM, fake API): it measures before it asks, asks
// with the measured time, runs only after "Compute", and says so when no time could be measured.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createInsights } from '../../llmvis/web/static/js/insights.js';
import { initialState } from '../../llmvis/web/static/js/state.js';
import { createStore } from '../../llmvis/web/static/js/store.js';
import { fakeDoc, t } from './helpers.mjs';

const N = 400;

function lensAnswer(start, end, computeS) {
  const L = 2;
  const grid = () => Array.from({ length: L + 1 }, () => Array(end - start).fill(0.5));
  return {
    start, end, compute_s: computeS, num_layers: L, num_tokens: N, num_prompt_tokens: N,
    tokens: Array.from({ length: N }, (_, i) => `w${i}`), chosen_prob: grid(), chosen_rank: grid(), entropy: grid(),
    top_ids: Array.from({ length: L + 1 }, () => Array(end - start).fill([1])),
    top_probs: Array.from({ length: L + 1 }, () => Array(end - start).fill([0.5])), texts: { 1: 'x' },
    first_top1: Array(end - start).fill(null), settled_top1: Array(end - start).fill(null),
    next_ids: Array(end - start).fill(1), mean_entropy: Array(L + 1).fill(1),
  };
}

function setup(computeS) {
  const doc = fakeDoc();
  const run = { run_id: 'r1', num_tokens: N, num_prompt_tokens: N, tokens: Array.from({ length: N }, () => ({ source: 'prompt', segment: 'user' })) };
  const store = createStore({ ...initialState(), lensRange: 'all', run });
  const calls = [];
  const api = {
    logitLens: async (runId, k, w) => { calls.push(w); return lensAnswer(w.start, w.end, computeS); },
    job: async () => ({ done: 0, total: N }),
    cancel: async () => ({}),
    segments: async () => ({ segments: [] }),
  };
  const feature = createInsights({ doc, api, t, store, chart: () => null });
  const ctx = () => ({ t, state: store.get(), selected: null, width: 800, height: 600, progress() {}, onStop() {} });
  return { doc, store, calls, feature, run, ctx };
}

test('a long whole-sequence lens is timed on its first 64 positions, then waits for Compute', async () => {
  const { doc, store, calls, feature, run, ctx } = setup(6.4); // 0.1 s per position
  const built = await feature.loaders.lens(run, ctx());
  assert.deepEqual(calls, [{ start: 0, end: 64 }], 'only the probe ran');
  assert.equal(built.message, t('lens.estimate', { n: N, time: t('time.s', { s: 40 }), per: '100' }));
  const button = doc.getElementById('lens-compute');
  assert.equal(button.hidden, false);
  assert.equal(button.textContent, t('lens.compute', { time: t('time.s', { s: 40 }) }));
  // Compute: the whole range runs as a named job, and the button goes away.
  button.fire('click');
  assert.equal(store.get().lensConfirmed, 'r1');
  const drawn = await feature.loaders.lens(run, ctx());
  assert.equal(calls.length, 2);
  assert.equal(calls[1].start, 0);
  assert.equal(calls[1].end, N);
  assert.match(calls[1].job_id, /^[0-9a-f]{16}$/);
  assert.ok(drawn.option && drawn.meta.columns === N - 1);
  assert.equal(button.hidden, true);
});

test('a lens measured to be quick does not ask', async () => {
  const { calls, feature, run, ctx } = setup(0.064); // 1 ms per position: 0.4 s in all
  const built = await feature.loaders.lens(run, ctx());
  assert.ok(built.option, 'drawn at once');
  assert.equal(calls.length, 2);
  assert.equal(calls[1].end, N);
});

test('when even the probe was cached, it asks without a time', async () => {
  const { doc, feature, run, ctx } = setup(0);
  const built = await feature.loaders.lens(run, ctx());
  assert.equal(built.message, t('lens.estimateUntimed', { n: N }));
  assert.equal(doc.getElementById('lens-compute').textContent, t('lens.computeUntimed'));
});
