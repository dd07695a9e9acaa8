// Pure helpers of the page glue: fork tree, score, interactive, controls, estimate, keep, core
// views and insights.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { FORM_FIELDS, buildPayload, sameFields } from '../../llmvis/web/static/js/controls.js';
import { coreExportDetail, corePositionOf, parseHead } from '../../llmvis/web/static/js/core.js';
import { estimateText } from '../../llmvis/web/static/js/estimate.js';
import { runLabel, runMeta, treeRows } from '../../llmvis/web/static/js/forktree.js';
import { insightsExportDetail, segmentLabels } from '../../llmvis/web/static/js/insights.js';
import {
  defaultDiffPair, forkBody, runsNewestFirst, validDiffPair, withRun,
} from '../../llmvis/web/static/js/interactive.js';
import { runFromSearch } from '../../llmvis/web/static/js/keep.js';
import { fmtPerplexity, gltrShares, runSummaryText } from '../../llmvis/web/static/js/score.js';
import { t } from './helpers.mjs';

const tok = (position, text, source) => ({ position, text, source });
const GEN = {
  run_id: 'g1', kind: 'generate', num_prompt_tokens: 2, params: { temperature: 0.7 },
  tokens: [tok(0, 'A', 'prompt'), tok(1, 'B', 'prompt'), tok(2, ' c', 'generated'), tok(3, ' d', 'generated')],
};
const FORK = {
  run_id: 'f1', kind: 'fork', parent_id: 'g1', fork_position: 3, num_prompt_tokens: 2, params: { temperature: 0.7 },
  tokens: [tok(0, 'A', 'prompt'), tok(1, 'B', 'prompt'), tok(2, ' c', 'generated'), tok(3, ' z', 'generated'), tok(4, ' e', 'generated')],
};
const SCORE = {
  run_id: 's1', kind: 'score', num_prompt_tokens: 2, score: { perplexity: 12.5, num_scored: 1 },
  tokens: [tok(0, 'Hi', 'prompt'), tok(1, ' there', 'prompt')],
};

test('runMeta: what the tree and the diff pickers know of a run', () => {
  assert.deepEqual(runMeta(FORK, 2), {
    run_id: 'f1', kind: 'fork', parent_id: 'g1', fork_position: 3, forced: ' z', preview: ' e',
    params: { temperature: 0.7 }, num_generated: 3, perplexity: null, created: null, order: 2,
  });
  assert.equal(runMeta(GEN, 1).preview, ' c d');
  assert.equal(runMeta(GEN, 1).parent_id, null);
  const s = runMeta(SCORE, 3);
  assert.equal(s.preview, 'Hi there', 'a scored text previews its text');
  assert.equal(s.perplexity, 12.5);
});

test('treeRows: the tree of the current run, depth first, children by order', () => {
  const metas = new Map([
    ['g1', { run_id: 'g1', parent_id: null, order: 1 }],
    ['f1', { run_id: 'f1', parent_id: 'g1', order: 2 }],
    ['f3', { run_id: 'f3', parent_id: 'f1', order: 3 }],
    ['f2', { run_id: 'f2', parent_id: 'g1', order: 4 }],
    ['o1', { run_id: 'o1', parent_id: null, order: 5 }],
  ]);
  assert.deepEqual(treeRows(metas, 'f3').map((r) => [r.meta.run_id, r.depth]), [['g1', 0], ['f1', 1], ['f3', 2], ['f2', 1]]);
  assert.deepEqual(treeRows(metas, 'o1').map((r) => r.meta.run_id), ['o1']);
  assert.deepEqual(treeRows(metas, 'zz'), []);
  const loop = new Map([['a', { run_id: 'a', parent_id: 'b', order: 1 }], ['b', { run_id: 'b', parent_id: 'a', order: 2 }]]);
  assert.deepEqual(treeRows(loop, 'a').map((r) => [r.meta.run_id, r.depth]), [['b', 0], ['a', 1]], 'a cycle ends');
});

test('runLabel for pickers', () => {
  assert.equal(runLabel(runMeta(FORK, 2), t), `#2 ${t('tree.fork', { pos: 3, tok: '·z' })}`);
  assert.equal(runLabel(runMeta(GEN, 1), t), `#1 ${t('tree.generate', { temp: 0.7, text: '·c·d' })}`);
  assert.equal(runLabel(runMeta(SCORE, 3), t), `#3 ${t('tree.score', { text: 'Hi·there' })}`);
});

test('gltrShares: counts and shares of the four buckets', () => {
  assert.deepEqual(gltrShares({ top10: 3, top100: 1, top1000: 0, beyond: 0 }).map((s) => [s.key, s.count, s.share]), [
    ['top10', 3, 0.75], ['top100', 1, 0.25], ['top1000', 0, 0], ['beyond', 0, 0],
  ]);
  assert.deepEqual(gltrShares(null).map((s) => s.share), [0, 0, 0, 0]);
});

test('fmtPerplexity', () => {
  assert.equal(fmtPerplexity(12.5), '12.50');
  assert.equal(fmtPerplexity(150), '150.0');
  assert.equal(fmtPerplexity(2000), '2.00e+3');
  assert.equal(fmtPerplexity(null), '—');
});

test('runSummaryText: generated tokens, speed, finish reason; or a scored text\'s perplexity', () => {
  const run = { ...GEN, timing: { tokens_per_s: 12.345 }, finish_reason: 'length' };
  assert.equal(runSummaryText(run, t), t('run.summary', { n: 2, tps: '12.3', reason: 'run.reason.length' }));
  assert.equal(runSummaryText({ ...run, timing: null }, t), t('run.summary', { n: 2, tps: '—', reason: 'run.reason.length' }));
  assert.equal(runSummaryText(SCORE, t), t('run.summaryScore', { n: 1, ppl: '12.50' }));
  assert.equal(runSummaryText(null, t), '');
  // a run the history could not keep says so, with the server's reason
  const unsaved = { ...run, saved: false, save_error: 'history: cannot write x.llmvis: Read-only file system' };
  assert.equal(runSummaryText(unsaved, t), `${t('run.summary', { n: 2, tps: '12.3', reason: 'run.reason.length' })} · ${
    t('run.notSaved', { reason: 'history: cannot write x.llmvis: Read-only file system' })}`);
  assert.equal(runSummaryText({ ...run, saved: true }, t), runSummaryText(run, t));
});

test('defaultDiffPair: a fork against its parent, else against the newest other run', () => {
  const metas = new Map([
    ['g1', { run_id: 'g1', parent_id: null, order: 1 }],
    ['g2', { run_id: 'g2', parent_id: null, order: 3 }],
    ['f1', { run_id: 'f1', parent_id: 'g1', order: 2 }],
  ]);
  assert.deepEqual(defaultDiffPair(metas, 'f1'), { a: 'g1', b: 'f1' });
  assert.deepEqual(defaultDiffPair(metas, 'g1'), { a: 'g2', b: 'g1' });
  assert.deepEqual(defaultDiffPair(new Map([['x', { run_id: 'x', order: 1 }]]), 'x'), { a: null, b: 'x' });
  assert.deepEqual(defaultDiffPair(metas, 'nope'), { a: null, b: null });
});

test('validDiffPair falls back to the newest run, as a picker shows it', () => {
  const metas = new Map([['a', { run_id: 'a', order: 1 }], ['b', { run_id: 'b', order: 2 }]]);
  assert.deepEqual(runsNewestFirst(metas).map((m) => m.run_id), ['b', 'a']);
  assert.deepEqual(validDiffPair(metas, { a: 'a', b: 'gone' }), { a: 'a', b: 'b' });
  assert.deepEqual(validDiffPair(metas, { a: null, b: 'a' }), { a: 'b', b: 'a' });
  assert.deepEqual(validDiffPair(new Map(), { a: 'x', b: null }), { a: null, b: null });
});

test('withRun adds a run with the next order, keeps an old run\'s order, never mutates', () => {
  const empty = new Map();
  const one = withRun(empty, GEN);
  assert.equal(empty.size, 0);
  assert.equal(one.get('g1').order, 1);
  const two = withRun(one, FORK);
  assert.equal(two.get('f1').order, 2);
  const again = withRun(two, { ...GEN, tokens: GEN.tokens.slice(0, 3) });
  assert.notEqual(again, two);
  assert.equal(again.get('g1').order, 1);
  assert.equal(again.get('g1').preview, ' c');
});

test('forkBody: the forced token and the form\'s settings, for every kind of run', () => {
  const settings = { temperature: 0.5, top_k: 0, top_p: 1, max_new_tokens: 16 };
  assert.deepEqual(forkBody(SCORE, 1, 42, settings), { run_id: 's1', position: 1, token_id: 42, ...settings });
  assert.deepEqual(forkBody(GEN, 3, 7, settings), { run_id: 'g1', position: 3, token_id: 7, ...settings });
});

test('buildPayload validates the form and builds the request', () => {
  const raw = { prompt: ' hi ', system: '', temperature: '0.7', top_k: '50', top_p: '0.95', max_new_tokens: '64', seed: '' };
  assert.deepEqual(buildPayload(raw, t), { payload: { prompt: ' hi ', temperature: 0.7, top_k: 50, top_p: 0.95, max_new_tokens: 64 } });
  assert.deepEqual(buildPayload({ ...raw, system: 'Be brief', seed: ' 7 ' }, t).payload.system, 'Be brief');
  assert.equal(buildPayload({ ...raw, seed: ' 7 ' }, t).payload.seed, 7);
  assert.deepEqual(buildPayload({ ...raw, prompt: '  ' }, t), { error: 'err.emptyPrompt' });
  assert.deepEqual(buildPayload({ ...raw, top_k: '1.5' }, t), { error: t('err.notInteger', { field: 'sampling.topK' }) });
  assert.deepEqual(buildPayload({ ...raw, temperature: '' }, t), { error: t('err.badNumber', { field: 'sampling.temperature' }) });
  assert.deepEqual(buildPayload({ ...raw, seed: 'x' }, t), { error: t('err.badNumber', { field: 'sampling.seed' }) });
});

test('the form fields and their inputs; sameFields compares them', () => {
  assert.deepEqual(Object.keys(FORM_FIELDS), ['prompt', 'system', 'temperature', 'top_k', 'top_p', 'max_new_tokens', 'seed']);
  assert.equal(FORM_FIELDS.max_new_tokens, 'max-new-tokens');
  assert.equal(sameFields({ a: '1' }, { a: '1' }), true);
  assert.equal(sameFields({ a: 1 }, { a: '1' }), false);
  assert.equal(sameFields({ a: '1' }, { a: '1', b: '2' }), false);
  assert.equal(sameFields({ a: '1' }, null), false);
});

test('estimateText', () => {
  const est = { fits: true, run_bytes: 48 * 1024 ** 2, peak_bytes: 1.5 * 1024 ** 3, num_tokens: 80, store_budget_bytes: 2 * 1024 ** 3 };
  assert.equal(estimateText(est, t), t('estimate.fits', { run: '48 MB', peak: '1.5 GB', tokens: 80, budget: '2.0 GB' }));
  assert.equal(estimateText({ ...est, fits: false, message: 'too big' }, t),
    t('estimate.over', { run: '48 MB', peak: '1.5 GB', tokens: 80, budget: '2.0 GB', message: 'too big' }));
});

test('runFromSearch accepts only a run id', () => {
  assert.equal(runFromSearch('?run=abcdef12'), 'abcdef12');
  assert.equal(runFromSearch('?x=1&run=0123456789abcdef0123456789abcdef'), '0123456789abcdef0123456789abcdef');
  assert.equal(runFromSearch('?run=0123456789abcdef0123456789abcdef0'), null, '33 characters');
  assert.equal(runFromSearch('?run=abc'), null, 'too short');
  assert.equal(runFromSearch('?run=ABCDEF12'), null, 'lower-case hex only');
  assert.equal(runFromSearch('?run=<script>'), null);
  assert.equal(runFromSearch(''), null);
});

test('core views: head values, export names, what a click selects', () => {
  assert.equal(parseHead('mean'), 'mean');
  assert.equal(parseHead('max'), 'max');
  assert.equal(parseHead('4'), 4);
  const s = { layer: 3, head: 'max', selected: 9, projLayer: 15 };
  assert.deepEqual(['attention', 'probs', 'entropy', 'similarity', 'projection', 'lens'].map((v) => coreExportDetail(v, s)),
    ['L3-max', 'pos9', 'curve', 'layers', 'L15', undefined]);
  assert.equal(corePositionOf({ seriesId: 'attention', data: [1, 2, 0.3] }, { view: 'attention', meta: { offset: 10, pool: 2 } }), 14);
  assert.equal(corePositionOf({ seriesId: 'per-token', data: [3, 1, 0.5, 0.5, 6] }, { view: 'similarity' }), 6);
  assert.equal(corePositionOf({ seriesId: 'per-token', data: [3, 1] }, { view: 'similarity' }), 3);
  assert.equal(corePositionOf({ seriesId: 'generated', value: [0.1, 0.2, 9] }, { view: 'projection' }), 9);
  assert.equal(corePositionOf({ seriesId: 'selected-row', data: [1] }, { view: 'attention' }), null);
  assert.equal(corePositionOf({ seriesId: 'attention', data: [1, 2] }, { view: 'probs' }), null);
});

test('segmentLabels: one label where each labelled segment starts, template markup skipped', () => {
  assert.deepEqual(segmentLabels(['template', 'system', 'system', 'template', 'user', 'user', 'assistant']), [
    { segment: 'system', start: 1 }, { segment: 'user', start: 4 }, { segment: 'assistant', start: 6 },
  ]);
  assert.deepEqual(segmentLabels(['user', 'template', 'user']), [{ segment: 'user', start: 0 }], 'template does not split a segment');
  assert.deepEqual(segmentLabels([]), []);
});

test('insights export names', () => {
  const s = { lensMetric: 'rank', lensRange: 'all', headsMode: 'grid', headsMetric: 'sink', selected: 5, rowHead: 'mean' };
  assert.equal(insightsExportDetail('lens', s), 'rank-all');
  assert.equal(insightsExportDetail('heads', s), 'grid-sink');
  assert.equal(insightsExportDetail('heads', { ...s, headsMode: 'row' }), 'row5-mean');
  assert.equal(insightsExportDetail('heads', { ...s, headsMode: 'segments' }), 'segments');
  assert.equal(insightsExportDetail('attention', s), undefined);
});
