// The chart option builders (views/*.js) and their helpers, on small hand-made answers.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PALETTE } from '../../llmvis/web/static/js/charts.js';
import {
  SCALES, attentionRequest, attentionRowToPosition, buildAttentionOption, headLabel, poolLowerTriangular,
} from '../../llmvis/web/static/js/views/attention.js';
import { buildDiffOption, diffRange, meanKlAfter } from '../../llmvis/web/static/js/views/diff.js';
import { buildEntropyOption, mean } from '../../llmvis/web/static/js/views/entropy.js';
import {
  buildHeadsGridOption, buildRowOption, buildSegmentsOption, gridCellToHead, kvBands, sampledNote,
} from '../../llmvis/web/static/js/views/heads.js';
import {
  buildLensOption, expandLensWindow, lensCellToPosition, lensCellValue, lensColumns,
} from '../../llmvis/web/static/js/views/lens.js';
import { buildProbsOption, candidateRows, cutMassText } from '../../llmvis/web/static/js/views/probs.js';
import {
  buildProjectionOption, clampPoints, robustWindow, splitPoints,
} from '../../llmvis/web/static/js/views/projection.js';
import { buildSamplerOption, paramsText, samplerNote, samplerStats } from '../../llmvis/web/static/js/views/sampler.js';
import { buildSimilarityOption, quantile } from '../../llmvis/web/static/js/views/similarity.js';
import { near, t } from './helpers.mjs';

// ---------- attention ----------
const TRI = [[1], [0.5, 0.5], [0.2, 0.3, 0.5]];

test('poolLowerTriangular max-pools blocks on and below the diagonal', () => {
  assert.deepEqual(poolLowerTriangular(TRI, 2), { factor: 2, size: 2, cells: [[0, 0, 1], [0, 1, 0.3], [1, 1, 0.5]] });
  const full = poolLowerTriangular(TRI);
  assert.equal(full.factor, 1);
  assert.deepEqual(full.cells, [[0, 0, 1], [0, 1, 0.5], [1, 1, 0.5], [0, 2, 0.2], [1, 2, 0.3], [2, 2, 0.5]]);
});

test('colour scales and their inverses', () => {
  assert.equal(SCALES.sqrt.fwd(0.25), 0.5);
  assert.equal(SCALES.sqrt.inv(0.5), 0.25);
  assert.equal(SCALES.sqrt.fwd(-1), 0);
  assert.equal(SCALES.log.fwd(0), -4, 'log is floored at 1e-4');
  assert.equal(SCALES.log.inv(-2), 0.01);
  assert.equal(SCALES.linear.fwd(0.3), 0.3);
});

test('attentionRequest: a pooled overview, or a window snapped to steps of 32', () => {
  assert.deepEqual(attentionRequest(300, 'all', 10), { pool: 240 });
  assert.deepEqual(attentionRequest(100, 'window', 50), { pool: 240 }, 'short runs are shown whole');
  assert.deepEqual(attentionRequest(300, 'window', null), { pool: 240 });
  assert.deepEqual(attentionRequest(300, 'window', 200), { q_start: 96, q_end: 224, k_start: 96, k_end: 224 });
  assert.deepEqual(attentionRequest(300, 'window', 290), { q_start: 172, q_end: 300, k_start: 172, k_end: 300 });
  assert.deepEqual(attentionRequest(300, 'window', 5), { q_start: 0, q_end: 128, k_start: 0, k_end: 128 });
});

test('a clicked cell maps back to its query position', () => {
  assert.equal(attentionRowToPosition([3, 2, 0.1], { offset: 96, pool: 4 }), 104);
  assert.equal(attentionRowToPosition([0, 5], {}), 5);
});

test('headLabel names the mean, the max and a head with its KV head', () => {
  assert.equal(headLabel('mean', t, 3), 'head.mean');
  assert.equal(headLabel('max', t, 3), 'head.max');
  assert.equal(headLabel(5, t, 3), 'head.n{"h":5,"kv":1}');
});

test('buildAttentionOption: cells, square grid, selected row and caption', () => {
  const data = { layer: 2, head: 'mean', num_tokens: 3, matrix: TRI, tokens: ['a', 'b', 'c'] };
  const built = buildAttentionOption(data, { t, selected: 1, scale: 'linear', width: 600, height: 600 });
  assert.deepEqual(built.meta, { layer: 2, head: 'mean', cells: 6, pool: 1, offset: 0, scale: 'linear' });
  const [heat, row] = built.option.series;
  assert.equal(heat.id, 'attention');
  assert.deepEqual(heat.data[0], [0, 0, 1, 1]);
  assert.deepEqual(heat.data[4], [1, 2, 0.3, 0.3]);
  assert.equal(row.id, 'selected-row');
  assert.deepEqual(row.data, [[1]]);
  // side = min(600 - 96 - 78, 600 - 24 - 96) = 426; centred: left 96, top (600 - 426 - 96) / 2
  assert.deepEqual(built.option.grid, { left: 96, top: 39, width: 426, height: 426 });
  assert.equal(built.option.visualMap.min, 0);
  assert.equal(built.option.visualMap.max, 1);
  // the selected row's label is highlighted by its own category item, on both axes
  assert.deepEqual(built.option.xAxis.data.map((d) => d.value ?? d), ['a', 'b', 'c']);
  assert.equal(built.option.xAxis.data[1].textStyle.color, '#f7768e');
  assert.equal(built.option.yAxis.data[1].textStyle.color, '#f7768e');
  assert.equal(built.caption, `${t('attn.caption', { layer: 2, head: 'head.mean', n: 3 })} · ${t('attn.scale', { scale: 'scale.linear' })}`);
});

test('buildAttentionOption: a server window says where it is; the sqrt scale maps the max', () => {
  const tokens = Array.from({ length: 300 }, (_, i) => `t${i}`);
  const data = { layer: 0, head: 3, num_tokens: 300, q_start: 96, matrix: [[0.81], [0.04, 0.36]], tokens };
  const built = buildAttentionOption(data, { t, selected: null, scale: 'sqrt', groupSize: 3 });
  assert.equal(built.meta.offset, 96);
  assert.deepEqual(built.option.xAxis.data, ['t96', 't97']);
  assert.ok(near(built.option.visualMap.max, 0.9));
  assert.deepEqual(built.option.series.map((s) => s.id), ['attention'], 'no selection, no row marker');
  assert.equal(built.caption, `${t('attn.caption', { layer: 0, head: t('head.n', { h: 3, kv: 1 }), n: 300 })} · ${t('attn.scale', { scale: 'scale.sqrt' })} · ${t('attn.window', { a: 96, b: 97 })}`);
  assert.equal(attentionRowToPosition(built.option.series[0].data[1], built.meta), 97);
});

// ---------- probabilities ----------
const PROBS = {
  position: 4,
  token: { id: 7, text: 'x', bytes: '78', prob: 0.01, sample_prob: 0, rank: 12, source: 'generated', sample_entropy: 0.9 },
  candidates: [
    { id: 1, text: 'a', bytes: '61', prob: 0.6, sample_prob: 0.7 },
    { id: 2, text: 'b', bytes: '62', prob: 0.3, sample_prob: 0.3 },
    { id: 3, text: 'c', bytes: '63', prob: 0.05, sample_prob: 0 },
  ],
  entropy: 1.2,
  cut_mass: 0.1,
};

test('candidateRows appends the chosen token when it is outside the top N', () => {
  const rows = candidateRows(PROBS);
  assert.deepEqual(rows.map((r) => [r.id, r.rank, r.chosen, Boolean(r.outside)]), [
    [1, 1, false, false], [2, 2, false, false], [3, 3, false, false], [7, 12, true, true],
  ]);
  const inside = candidateRows({ ...PROBS, token: { ...PROBS.token, id: 2 } });
  assert.deepEqual(inside.map((r) => r.chosen), [false, true, false]);
});

test('buildProbsOption: bars, the chosen one highlighted, both distributions for a generated token', () => {
  const built = buildProbsOption(PROBS, { t, height: 600 });
  assert.deepEqual(built.option.yAxis.data, ['a', 'b', 'c', '#12 x']);
  assert.deepEqual(built.option.series.map((s) => s.id), ['raw', 'sample']);
  assert.deepEqual(built.option.series[0].data.map((d) => d.value), [0.6, 0.3, 0.05, 0.01]);
  assert.deepEqual(built.option.series[0].data.map((d) => d.tokenId), [1, 2, 3, 7], 'bars carry the id to fork with');
  assert.equal(built.option.series[0].data[3].itemStyle.color, PALETTE.highlight);
  assert.equal(built.option.series[0].data[0].itemStyle.color, PALETTE.accent);
  assert.equal(built.option.xAxis.max({ max: 0.6 }), 0.7, 'ceil(0.6 * 1.12 * 20) / 20');
  assert.deepEqual(built.meta, { position: 4, 'top-id': 1, 'chosen-id': 7, 'chosen-rank': 12, bars: 4 });
  assert.equal(built.caption, t('probs.caption', { pos: 4, tok: 'x', prob: '0.0100', rank: 12, ent: '1.200' }));
  const prompt = buildProbsOption({ ...PROBS, token: { ...PROBS.token, source: 'prompt' } }, { t });
  assert.deepEqual(prompt.option.series.map((s) => s.id), ['raw'], 'a prompt token was not sampled');
});

test('cutMassText', () => {
  // Each number names its distribution: 10 % of the tempered one, 1 − 0.6 − 0.3 of the raw bars.
  assert.equal(cutMassText(PROBS, t), `${t('probs.cutTempered', { mass: '10.00%' })} · ${t('probs.cutRaw', { mass: '10.00%' })}`);
  assert.equal(cutMassText({ ...PROBS, token: { source: 'prompt' } }, t), 'probs.cutMassNone');
  assert.equal(cutMassText({ ...PROBS, cut_mass: null }, t), 'probs.cutMassNone');
});

// ---------- entropy ----------
const RUN = {
  num_prompt_tokens: 2,
  tokens: [
    { position: 0, text: 'a', source: 'prompt', entropy: null, prob: null },
    { position: 1, text: 'b', source: 'prompt', entropy: 2, prob: 0.5 },
    { position: 2, text: 'c', source: 'generated', entropy: 1, prob: 0.8, sample_entropy: 0.5 },
    { position: 3, text: 'd', source: 'generated', entropy: 3, prob: 0.4, sample_entropy: 2 },
  ],
};

test('mean ignores missing values', () => {
  assert.equal(mean([1, null, 3, NaN]), 2);
  assert.equal(mean([]), null);
});

test('buildEntropyOption: curves, the generated region and the selection', () => {
  const built = buildEntropyOption(RUN, { t, selected: 2 });
  assert.deepEqual(built.meta, { points: 4, boundary: 2 });
  const [ent, samp, conf] = built.option.series;
  assert.deepEqual(ent.data, [[0, null], [1, 2], [2, 1], [3, 3]]);
  assert.deepEqual(samp.data, [[0, null], [1, null], [2, 0.5], [3, 2]], 'sampling entropy only where sampled');
  assert.deepEqual(conf.data, [[0, null], [1, 0.5], [2, 0.8], [3, 0.4]]);
  assert.deepEqual(ent.markLine.data.map((d) => d.xAxis), [1.5, 2], 'boundary, then the selection');
  assert.equal(ent.markArea.data[0][0].xAxis, 1.5);
  assert.equal(ent.markArea.data[0][1].xAxis, 3.5);
  assert.equal(built.option.xAxis.min, -0.5);
  assert.equal(built.option.xAxis.max, 3.5);
  assert.deepEqual(built.option.dataZoom, [], 'no zoom for a short run');
  assert.equal(built.caption, t('entropy.caption', { ent: '2.000', conf: '0.600' }));
});

test('buildEntropyOption zooms a long run onto its end', () => {
  const tokens = Array.from({ length: 300 }, (_, i) => ({ position: i, text: 'x', source: i < 250 ? 'prompt' : 'generated', entropy: 1, prob: 0.5 }));
  const built = buildEntropyOption({ num_prompt_tokens: 250, tokens }, { t, selected: null });
  // zoom start: min(250 - 100, 300 - 120) = 150
  assert.equal(built.option.dataZoom[0].startValue, 150);
  assert.equal(built.option.dataZoom[0].endValue, 299.5);
});

// ---------- similarity ----------
test('quantile of the finite values', () => {
  assert.equal(quantile([3, 1, 2, NaN, 4], 0.5), 2);
  assert.equal(quantile([], 0.5), 0);
  assert.equal(quantile([5], 0.9), 5);
});

test('buildSimilarityOption: clipped cells, the layer that rewrites most, the selected column', () => {
  const data = { per_layer: [0.9, 0.5, 0.95], per_token: [[0.8, 1.0], [0.4, 0.6], [0.9, 1.0]], tokens: ['a', 'b'] };
  const built = buildSimilarityOption(data, { t, selected: 1, width: 600, height: 600 });
  const heat = built.option.series.find((s) => s.id === 'per-token');
  assert.deepEqual(heat.data, [
    [0, 0, 0.8, 0.8, 0], [1, 0, 1, 1, 1],
    [0, 1, 0.4, 0.4, 0], [1, 1, 0.6, 0.6, 1],
    [0, 2, 0.9, 0.9, 0], [1, 2, 1, 1, 1],
  ]);
  assert.equal(built.option.visualMap.min, 0.4, 'the 10th percentile of the six values');
  assert.equal(built.option.visualMap.max, 1);
  assert.equal(built.option.yAxis[0].min, 0.5, 'floor(0.5 * 4) / 4');
  assert.deepEqual(built.option.series.find((s) => s.id === 'selected-col').data, [[1]]);
  assert.deepEqual(built.option.series[0].markPoint.data, [{ coord: [1, 0.5] }]);
  assert.deepEqual(built.meta, { layers: 3, tokens: 2, cells: 6, block: 1 });
  assert.equal(built.caption, t('similarity.caption', { l: 1, l1: 2, v: '0.500' }));
});

test('buildSimilarityOption averages blocks of tokens past 400 columns', () => {
  const row = Array.from({ length: 401 }, (_, i) => (i % 2 ? 1 : 0.5));
  const built = buildSimilarityOption({ per_layer: [0.9], per_token: [row], tokens: row.map(() => 'x') }, { t });
  assert.equal(built.meta.block, 2);
  assert.equal(built.meta.cells, 201);
  const heat = built.option.series.find((s) => s.id === 'per-token');
  assert.deepEqual(heat.data[0], [0, 0, 0.75, 0.75, 0], 'positions 0 and 1 averaged');
  assert.deepEqual(heat.data[200], [200, 0, 0.5, 0.5, 400], 'the last column holds one position');
});

// ---------- projection ----------
test('splitPoints sorts points into template, prompt and generated', () => {
  const tokens = [{ source: 'prompt', segment: 'template' }, { source: 'prompt', segment: 'user' }, { source: 'generated' }];
  const pts = [0, 1, 2].map((position) => ({ position, x: position, y: 0 }));
  const g = splitPoints(pts, tokens);
  assert.deepEqual([g.template, g.prompt, g.generated].map((l) => l.map((p) => p.position)), [[0], [1], [2]]);
});

test('robustWindow frames the bulk when a few points are far out; clampPoints pins them to the edge', () => {
  assert.equal(robustWindow([{ x: 0, y: 0 }]), null, 'fewer than 12 points');
  const pts = Array.from({ length: 12 }, (_, i) => ({ x: i === 11 ? 1000 : i, y: i }));
  const win = robustWindow(pts);
  // x: 5%/95% quantiles 1 and 10, span 9, window widened by 0.35 * 9 each side; y is not far out
  assert.ok(near(win.x[0], -2.15) && near(win.x[1], 13.15), JSON.stringify(win));
  assert.deepEqual(win.y, [0, 11]);
  assert.equal(robustWindow(Array.from({ length: 12 }, (_, i) => ({ x: i, y: i }))), null);
  assert.deepEqual(clampPoints([{ x: 20, y: 5 }], { x: [0, 10], y: [0, 10] }), [{ x: 10, y: 5, rawX: 20, rawY: 5, off: true }]);
  assert.deepEqual(clampPoints([{ x: 1, y: 2 }], null), [{ x: 1, y: 2, off: false }]);
});

test('buildProjectionOption: series per kind, the path through generated tokens, variance text', () => {
  const run = { tokens: [{ source: 'prompt', segment: 'template', text: '<s>' }, { source: 'prompt', text: 'hi' }, { source: 'generated', text: '!' }] };
  const data = {
    layer: 0,
    explained_variance: [0.5, 0.25],
    points: [{ position: 0, x: 0, y: 0, text: '<s>' }, { position: 1, x: 1, y: 1, text: 'hi' }, { position: 2, x: 2, y: -1, text: '!' }],
  };
  const built = buildProjectionOption(data, { t, run, selected: 2 });
  assert.deepEqual(built.option.series.map((s) => s.id), ['path', 'template', 'prompt', 'generated', 'selected']);
  assert.deepEqual(built.option.series[0].data, [[2, -1]]);
  assert.deepEqual(built.option.series[3].data, [{ value: [2, -1, 2], name: '!' }]);
  assert.equal(built.option.xAxis.name, 'PC1 (50.0%)');
  assert.equal(built.option.yAxis.name, 'PC2 (25.0%)');
  assert.deepEqual(built.meta, { layer: 0, points: 3, 'off-scale': 0 });
  assert.equal(built.caption, t('projection.caption', { layer: 'projection.embeddings', n: 3 }));
  assert.equal(built.variance, t('projection.variance', { v1: '50.0%', v2: '25.0%' }));
});

// ---------- logit lens ----------
test('lensColumns: generated tokens, everything, or the tail of a scored text', () => {
  assert.deepEqual(lensColumns(10, 4, 'generated'), { start: 3, end: 9, tail: false });
  assert.deepEqual(lensColumns(10, 4, 'all'), { start: 0, end: 9, tail: false });
  assert.deepEqual(lensColumns(10, 10, 'generated'), { start: 0, end: 9, tail: true });
  assert.deepEqual(lensColumns(100, 100, 'generated'), { start: 35, end: 99, tail: true });
});

test('expandLensWindow puts a window back at its absolute positions', () => {
  const win = {
    start: 2, end: 4, chosen_prob: [[0.1, 0.2]], chosen_rank: [[1, 2]], entropy: [[1, 1]],
    top_ids: [[[5], [6]]], top_probs: [[[0.5], [0.6]]], first_top1: [0, null], settled_top1: [0, 1],
  };
  const out = expandLensWindow(win);
  assert.deepEqual(out.chosen_prob, [[null, null, 0.1, 0.2]]);
  assert.deepEqual(out.top_ids, [[null, null, [5], [6]]]);
  assert.deepEqual(out.first_top1, [null, null, 0, null]);
  assert.deepEqual(out.window, { start: 2, end: 4 });
  assert.equal(out.start, 0);
  const whole = { start: 0 };
  assert.equal(expandLensWindow(whole), whole, 'nothing to move');
});

const LENS = {
  num_layers: 1, num_tokens: 3, num_prompt_tokens: 1, tokens: ['a', 'b', 'c'], texts: { 5: 'x', 6: 'y' },
  chosen_prob: [[0.1, 0.2, null], [0.7, 0.9, null]],
  chosen_rank: [[3, 100, null], [1, 1, null]],
  entropy: [[2, 2, 2], [1, 0.5, 0.1]],
  top_ids: [[[5], [6], [5]], [[5], [6], [6]]],
  top_probs: [[[0.4], [0.3], [0.2]], [[0.7], [0.9], [0.5]]],
  first_top1: [1, 1, null], settled_top1: [1, 1, null], mean_entropy: [2, 0.53], next_ids: [1, 2, null],
};

test('lensCellValue per metric (rank on a log scale)', () => {
  assert.equal(lensCellValue(LENS, 'prob', 1, 0), 0.7);
  assert.equal(lensCellValue(LENS, 'rank', 0, 1), 2);
  assert.equal(lensCellValue(LENS, 'entropy', 1, 2), 0.1);
  assert.equal(lensCellValue(LENS, 'rank', 0, 2), null);
});

test('buildLensOption: cells, first-top-1 markers, layout and caption', () => {
  const built = buildLensOption(LENS, { t, metric: 'prob', range: 'generated', selected: 1 });
  const heat = built.option.series.find((s) => s.id === 'lens');
  assert.deepEqual(heat.data, [[0, 0, 0.1], [1, 0, 0.2], [0, 1, 0.7], [1, 1, 0.9]]);
  assert.deepEqual(built.option.series.find((s) => s.id === 'first-top1').data, [[0, 1], [1, 1]]);
  assert.deepEqual(built.option.series.find((s) => s.id === 'selected-col').data, [[1]]);
  // 800 x 600: side chart 128 wide, plot 800 - 74 - 128 - 120 = 478 by 600 - 28 - 92 = 480
  assert.deepEqual(built.meta, {
    metric: 'prob', layers: 2, columns: 2, start: 0, cells: 4, 'first-top1': 2, labels: 1, plot: '74,28,478,480',
  });
  assert.equal(built.option.visualMap.max, 1);
  assert.equal(built.caption, `${t('lens.caption', { n: 2, metric: 'lens.metric.prob' })} · ${t('lens.settled', { l: '1.0' })}`);
  const rank = buildLensOption(LENS, { t, metric: 'rank', range: 'generated' });
  assert.equal(rank.option.visualMap.max, 2, 'ceil(log10(100))');
  assert.equal(buildLensOption(LENS, { t, metric: 'bogus' }).meta.metric, 'prob');
});

test('a clicked lens cell maps back to its position', () => {
  assert.equal(lensCellToPosition([1, 0], { start: 3 }), 4);
});

// ---------- heads ----------
test('kvBands groups heads by the KV head they read', () => {
  assert.deepEqual(kvBands([0, 0, 1, 1, 1]), [{ kv: 0, heads: [0, 1] }, { kv: 1, heads: [2, 3, 4] }]);
  assert.deepEqual(kvBands([]), []);
});

test('sampledNote only when fewer query rows were used than there are', () => {
  assert.equal(sampledNote(t, 10, 100), ` · ${t('heads.sampled', { used: 10, total: 100 })}`);
  assert.equal(sampledNote(t, 100, 100), '');
  assert.equal(sampledNote(t, null, 5), '');
});

test('gridCellToHead', () => {
  assert.deepEqual(gridCellToHead([3, 2, 0.5]), { layer: 2, head: 3 });
});

test('buildHeadsGridOption: a cell per layer and head, the best one named, the open head marked', () => {
  const m = [[1, 2], [3, 0.5]];
  const data = {
    num_layers: 2, num_heads: 2, num_kv_heads: 1, kv_group: [0, 0], entropy: m, entropy_norm: m, sink: m, prev: m,
    num_tokens: 10, query_rows_used: 4,
  };
  const built = buildHeadsGridOption(data, { t, metric: 'entropy', layer: 1, head: 0 });
  assert.deepEqual(built.option.series[0].data, [[0, 0, 1], [1, 0, 2], [0, 1, 3], [1, 1, 0.5]]);
  assert.deepEqual(built.option.series.find((s) => s.id === 'selected-head').data, [[0, 1]]);
  assert.equal(built.option.visualMap.max, 3);
  assert.deepEqual(built.option.visualMap.text, ['3.00 nats', '0']);
  assert.equal(built.meta.cells, 4);
  assert.equal(built.meta['query-rows'], 4);
  assert.equal(built.caption, t('heads.caption', { metric: 'heads.metric.entropy', l: 1, h: 0, v: '3.000', kvh: 1, hq: 2 })
    + sampledNote(t, 4, 10));
  const sink = buildHeadsGridOption(data, { t, metric: 'sink', head: 'mean' });
  assert.equal(sink.option.visualMap.max, 1, 'shares are bounded by 1');
  assert.deepEqual(sink.option.series.find((s) => s.id === 'selected-head').data, [], 'the mean is not one cell');
});

test('buildRowOption: the selected query in every layer, its most-attended key', () => {
  const data = { num_layers: 2, num_keys: 2, position: 1, head: 'mean', tokens: ['a', 'b'], matrix: [[0.25, 0.75], [0.5, 0.5]] };
  const built = buildRowOption(data, { t });
  assert.deepEqual(built.option.series[0].data[0], [0, 0, 0.5, 0.25]);
  assert.ok(near(built.option.visualMap.max, Math.sqrt(0.75)));
  // mean over layers: key 0 gets 0.375, key 1 gets 0.625
  assert.equal(built.caption, t('heads.rowCaption', { pos: 1, tok: 'b', head: 'head.mean', top: 1, ttok: 'b', share: '63' }));
  assert.deepEqual(built.meta, { mode: 'row', position: 1, head: 'mean', layers: 2, keys: 2, cells: 4, plot: '64,24,540,476' });
});

test('buildSegmentsOption: stacked shares and entropies per segment', () => {
  const data = {
    num_layers: 2, names: ['user', 'assistant'],
    attention_share: { user: [0.7, null], assistant: [0.3, 0.4] },
    attention_entropy: { user: [1, 2], assistant: [0.5, 0.6] },
    token_entropy: { user: 1.234, assistant: null },
    num_generated_queries: 3, segments: ['user', 'user', 'assistant'], query_rows_used: 3,
  };
  const built = buildSegmentsOption(data, { t });
  assert.deepEqual(built.option.series.map((s) => s.id), ['share-user', 'share-assistant', 'entropy-user', 'entropy-assistant']);
  assert.deepEqual(built.option.series[0].data, [0.7, 0], 'a missing share is drawn as 0');
  assert.equal(built.caption, t('segments.caption', { ent: 'tip.segment.user 1.23' }));
  assert.deepEqual(built.meta, { mode: 'segments', segments: 'user,assistant', layers: 2 });
  assert.equal(buildSegmentsOption({ ...data, num_generated_queries: 0 }, { t }).caption, 'segments.noGenerated');
});

// ---------- sampler ----------
const SAMPLED = {
  position: 5,
  token: { id: 2, text: 'b', bytes: '62', prob: 0.3, sample_prob: 0.5, rank: 2, source: 'generated', sample_entropy: 0.7 },
  candidates: [
    { id: 1, text: 'a', bytes: '61', prob: 0.6, sample_prob: 0.5 },
    { id: 2, text: 'b', bytes: '62', prob: 0.3, sample_prob: 0.5 },
    { id: 3, text: 'c', bytes: '63', prob: 0.1, sample_prob: 0 },
  ],
  entropy: 0.9,
  cut_mass: 0.1,
};

test('paramsText shows 0 and 1 as off', () => {
  assert.equal(paramsText({ temperature: 0.7, top_k: 50, top_p: 0.95 }, t), 'T 0.7 · top-k 50 · top-p 0.95');
  assert.equal(paramsText({ temperature: 1, top_k: 0, top_p: 1 }, t), 'T 1 · top-k sampler.off · top-p sampler.off');
  assert.equal(paramsText(null, t), '');
});

test('samplerStats: where the chosen token fell before and after the filters', () => {
  assert.deepEqual(samplerStats(SAMPLED), {
    rawRank: 2, rawProb: 0.3, sampleProb: 0.5, sampleRank: 2, kept: true, keptCount: 2, keptAtLeast: false, forced: false, sampled: true,
  });
  const prompt = samplerStats({ ...SAMPLED, token: { ...SAMPLED.token, source: 'prompt' } }, { forced: true });
  assert.deepEqual([prompt.sampled, prompt.sampleProb, prompt.keptCount, prompt.forced], [false, null, null, true]);
  const allKept = samplerStats({ ...SAMPLED, candidates: SAMPLED.candidates.slice(0, 2) });
  assert.equal(allKept.keptAtLeast, true, 'every candidate kept: there may be more beyond the top N');
});

test('buildSamplerOption: two grids side by side, cut candidates greyed', () => {
  const built = buildSamplerOption(SAMPLED, { temperature: 0.7, top_k: 2, top_p: 1 }, { t });
  // 700 wide: each grid (700 - 112 - 12 - 64 - 58) / 2 = 227 wide, the second at 124 + 227 + 64
  assert.deepEqual(built.option.grid, [{ left: 124, width: 227, top: 76, bottom: 40 }, { left: 415, width: 227, top: 76, bottom: 40 }]);
  assert.deepEqual(built.option.series.map((s) => s.id), ['raw', 'sample']);
  assert.deepEqual(built.option.series[0].data.map((d) => d.itemStyle.color), [PALETTE.accent, PALETTE.highlight, '#3a4350']);
  assert.deepEqual(built.meta, {
    position: 5, 'chosen-id': 2, 'chosen-rank': 2, 'sample-rank': 2, 'cut-mass': 0.1, kept: 2, bars: 3, distributions: 2,
  });
  assert.equal(built.caption, t('sampler.caption', { pos: 5, tok: 'b', cut: '10.0%', h: '0.90', hs: '0.70' }));
  const prompt = buildSamplerOption({ ...SAMPLED, token: { ...SAMPLED.token, source: 'prompt' } }, {}, { t });
  assert.equal(prompt.meta.distributions, 1);
  assert.equal(prompt.option.graphic[0].style.text, 'sampler.notSampledLong');
});

test('samplerNote', () => {
  assert.equal(samplerNote(SAMPLED, t, { temperature: 0.7 }), t('sampler.cutTempered', { mass: '10.00%', temp: 0.7 }));
  assert.equal(samplerNote({ ...SAMPLED, cut_mass: null }, t), 'sampler.noCut');
});

// ---------- diff ----------
const tok = (position, source, text = 'x', id = position) => ({ position, source, text, id });
const DIFF = {
  run_a: 'aa', run_b: 'bb',
  tokens_a: [tok(0, 'prompt'), tok(1, 'prompt'), tok(2, 'prompt'), tok(3, 'generated'), tok(4, 'generated', 'p'), tok(5, 'generated')],
  tokens_b: [tok(0, 'prompt'), tok(1, 'prompt'), tok(2, 'prompt'), tok(3, 'generated'), tok(4, 'generated', 'q'), tok(5, 'generated'), tok(6, 'generated')],
  same: [true, true, true, true, false, false],
  divergence_position: 4,
  common_prefix: 4,
  params_a: { temperature: 0.2 }, params_b: { temperature: 1.5 },
  kl: [
    { position: 1, kl_raw: 0, kl_sampling: 0, in_common_prefix: true },
    { position: 4, kl_raw: 0.2, kl_sampling: 0.4, in_common_prefix: true },
    { position: 5, kl_raw: -0.1, kl_sampling: 1.0, in_common_prefix: false },
    { position: 6, kl_raw: null, kl_sampling: 2.0, in_common_prefix: false },
  ],
};

test('diffRange starts a few tokens before the first generated token or the divergence', () => {
  assert.deepEqual(diffRange(DIFF), { start: 0, end: 7 });
  assert.deepEqual(diffRange(DIFF, 1), { start: 2, end: 7 });
});

test('meanKlAfter averages after the common prefix, negatives as 0, missing skipped', () => {
  assert.equal(meanKlAfter(DIFF, 'kl_raw'), 0);
  assert.equal(meanKlAfter(DIFF, 'kl_sampling'), 1.5);
  assert.equal(meanKlAfter({ kl: [] }, 'kl_raw'), null);
});

test('buildDiffOption: two KL curves, the prefix shaded, the divergence marked', () => {
  const built = buildDiffOption(DIFF, { t });
  assert.deepEqual(built.option.series.map((s) => s.id), ['kl-sampling', 'kl-raw']);
  assert.deepEqual(built.option.series[1].data, [[1, 0], [4, 0.2], [5, 0], [6, null]]);
  assert.deepEqual(built.option.series[0].markLine.data.map((d) => d.xAxis), [4]);
  assert.equal(built.option.series[0].markArea.data[0][0].xAxis, 0.5);
  assert.equal(built.option.series[0].markArea.data[0][1].xAxis, 4.5);
  assert.equal(built.option.xAxis.max, 6.5);
  assert.deepEqual(built.meta, { 'run-a': 'aa', 'run-b': 'bb', divergence: 4, 'common-prefix': 4, points: 4 });
  assert.equal(built.caption, t('diff.caption', { samp: '1.500', raw: '0.000', n: 7 }));
});
