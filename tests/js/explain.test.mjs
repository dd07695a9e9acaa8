// The Explain tab (issue 14): its pure builders (views/explain.js) on small hand-made answers
// shaped as docs/EXPLAIN.md says, and its feature (explain.js) on a fake DOM and a fake API.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { hexToRgb } from '../../llmvis/web/static/js/colors.js';
import {
  CANDIDATES_N, choices, createExplain, logitClickHead, whyNotPatch,
} from '../../llmvis/web/static/js/explain.js';
import { createRegistry } from '../../llmvis/web/static/js/registry.js';
import { initialState } from '../../llmvis/web/static/js/state.js';
import { createStore } from '../../llmvis/web/static/js/store.js';
import {
  DIVERGING, EDGE_COLOURS, NEGATIVE, POSITIVE, absMax, buildFlowOption, buildInputsOption, buildLogitOption,
  chipShades, divergingColour, edgeWidth, explainExportDetail, explainProblem, filterFlowEdges, flowClickEdge,
  flowColumns, flowEdgeInfo, fmtSigned, inputsLegend, logitCellToHead, logitHeatmap, logitParts, parseSteps,
  runnerUp, topByMagnitude, topTokens,
} from '../../llmvis/web/static/js/views/explain.js';
import { fakeDoc, near, t } from './helpers.mjs';

// ---------- hand-made answers ----------
/** A logit answer for L = 2 layers, Hq = 4 query heads in 2 KV groups; parts sum to the logit. */
function logitAnswer(over = {}) {
  const heads = [[0.5, -1.25, 0.0, 2.0], [-0.25, 0.75, -3.0, 0.1]];
  const mlp = [1.5, -0.5];
  const embedding = 0.4;
  const total = embedding + heads.flat().reduce((a, b) => a + b, 0) + mlp.reduce((a, b) => a + b, 0);
  return {
    run_id: 'abcd1234',
    position: 7,
    query_position: 6,
    target: { id: 42, text: ' blue' },
    contrast: null,
    logit: total + 2e-5,
    softcap: null,
    embedding,
    heads,
    o_bias: [0, 0],
    attention: heads.map((r) => r.reduce((a, b) => a + b, 0)),
    mlp,
    kv_group: [0, 0, 1, 1], // the KV head of each query head
    total,
    gap: 2e-5,
    seconds: 0.01,
    ...over,
  };
}

const ctx = { t, width: 900, height: 600 };

// ---------- colours and numbers ----------
test('the diverging scale is sign-aware and centred on 0', () => {
  const [r0, g0, b0] = hexToRgb(divergingColour(0, 2));
  assert.deepEqual([r0, g0, b0], hexToRgb(DIVERGING[3]), '0 is the middle stop');
  const [rp, , bp] = hexToRgb(divergingColour(1.5, 2));
  const [rn, , bn] = hexToRgb(divergingColour(-1.5, 2));
  assert.ok(rp > bp, 'a positive part is red');
  assert.ok(bn > rn, 'a negative part is blue');
  assert.equal(divergingColour(5, 2), divergingColour(2, 2), 'clamped beyond the ends');
  assert.equal(divergingColour(-2, 2), DIVERGING[0]);
  assert.equal(divergingColour(2, 2), DIVERGING[DIVERGING.length - 1]);
  assert.equal(divergingColour(Number.NaN, 2), DIVERGING[3]);
  // symmetric: the same |v| is as far from the centre on both sides
  const dist = (hex) => hexToRgb(hex).reduce((s, v, k) => s + (v - hexToRgb(DIVERGING[3])[k]) ** 2, 0);
  assert.ok(Math.abs(Math.sqrt(dist(divergingColour(2, 2))) - Math.sqrt(dist(divergingColour(-2, 2)))) < 60);
});

test('absMax, fmtSigned, parseSteps', () => {
  assert.equal(absMax([1, -3, [2, [-4.5]], null, 'x']), 4.5);
  assert.equal(absMax([]), 1e-9);
  assert.equal(fmtSigned(1.23456), '+1.235');
  assert.equal(fmtSigned(-0.5, 2), '−0.50');
  assert.equal(fmtSigned(0), '0.000');
  assert.equal(fmtSigned(null), '—');
  assert.equal(parseSteps('32'), 32);
  assert.equal(parseSteps('0'), 16);
  assert.equal(parseSteps('abc'), 16);
  assert.equal(parseSteps('999'), 128);
  assert.equal(parseSteps('7.6'), 8);
});

test('explainProblem: position 0 and no selection are clear messages', () => {
  const run = { tokens: [{}, {}, {}] };
  assert.equal(explainProblem(run, 0), 'explain.position0');
  assert.equal(explainProblem(run, null), 'explain.noToken');
  assert.equal(explainProblem(run, 3), 'explain.noToken');
  assert.equal(explainProblem(null, 1), 'view.empty');
  assert.equal(explainProblem(run, 2), null);
});

test('the export name names the sub-view, the method and the position', () => {
  const s = { ...initialState(), view: 'explain', selected: 9 };
  assert.equal(explainExportDetail({ ...s, explainMode: 'logit' }), 'logit-pos9');
  assert.equal(explainExportDetail({ ...s, explainMode: 'logit', explainContrast: 77 }), 'logit-pos9-vs77');
  assert.equal(explainExportDetail({ ...s, explainMode: 'inputs', explainMethod: 'integrated_gradients' }), 'inputs-integrated_gradients-pos9');
  assert.equal(explainExportDetail({ ...s, explainMode: 'flow' }), 'flow-pos9');
});

// ---------- logit attribution ----------
test('logitParts lists the embedding, every head and every MLP (no bias column without a bias)', () => {
  const parts = logitParts(logitAnswer());
  assert.equal(parts.length, 1 + 2 * 4 + 2);
  assert.equal(parts[0].kind, 'embed');
  const sum = parts.reduce((a, p) => a + p.value, 0);
  assert.ok(near(sum, logitAnswer().total, 1e-12), 'the parts are the whole');
  const h = parts.find((p) => p.kind === 'head' && p.layer === 1 && p.head === 2);
  assert.equal(h.value, -3.0);
  assert.equal(h.kv, 1);
  const lm = logitParts(logitAnswer({ lm_bias: -0.3 }));
  assert.equal(lm.length, parts.length + 1, 'an LM-head bias is a part of its own');
  assert.equal(lm[1].kind, 'lmbias');
  const withBias = logitParts(logitAnswer({ o_bias: [0.2, 0] }));
  assert.equal(withBias.filter((p) => p.kind === 'bias').length, 2);
});

test('logitHeatmap: heads grouped by KV head, then the bias (if any), then the MLP', () => {
  const { columns, cells } = logitHeatmap(logitAnswer({ kv_group: [0, 1, 0, 1] }));
  assert.deepEqual(columns.map((c) => c.kind === 'head' ? c.head : c.kind), [0, 2, 1, 3, 'mlp']);
  assert.deepEqual(columns.slice(0, 4).map((c) => c.kv), [0, 0, 1, 1]);
  assert.equal(cells.length, 2 * 5);
  // column 1 is head 2: layer 1's value is -3, and the cell carries the head
  assert.deepEqual(cells.find((c) => c[0] === 1 && c[1] === 1), [1, 1, -3.0, 2, -Math.sqrt(3)]);
  assert.deepEqual(cells.find((c) => c[0] === 4 && c[1] === 0), [4, 0, 1.5, -1, Math.sqrt(1.5)], 'the MLP cell');
  assert.deepEqual(logitCellToHead([1, 1, -3.0, 2]), { layer: 1, head: 2 });
  assert.equal(logitCellToHead([4, 0, 1.5, -1]), null, 'an MLP cell names no head');
  const listed = logitHeatmap(logitAnswer({ kv_group: undefined, kv_groups: [[0, 2], [1, 3]] }));
  assert.deepEqual(listed.columns.map((c) => c.head), [0, 2, 1, 3, null], 'kv_groups (lists of heads) also work');
  const biased = logitHeatmap(logitAnswer({ o_bias: [0.2, -0.1] }));
  assert.deepEqual(biased.columns.map((c) => c.kind).slice(-2), ['bias', 'mlp']);
});

test('topByMagnitude keeps the k largest |values| with their signs, ties in order', () => {
  const items = [3, -5, 1, 5, -0.5, 2].map((value, i) => ({ value, i }));
  assert.deepEqual(topByMagnitude(items, 3).map((x) => x.value), [-5, 5, 3]);
  assert.deepEqual(topByMagnitude(items, 100).length, 6);
  assert.deepEqual(topByMagnitude([{ value: Number.NaN }, { value: 1 }], 5).map((x) => x.value), [1]);
});

test('buildLogitOption: a diverging heatmap centred on 0, signed top bars, and the caption', () => {
  const data = logitAnswer();
  const built = buildLogitOption(data, ctx);
  const vm = built.option.visualMap;
  assert.equal(vm.min, -vm.max, 'the colour scale is centred on 0');
  assert.equal(vm.dimension, 4, 'coloured by the signed square root');
  assert.ok(near(vm.max, Math.sqrt(3.0)), 'its ends are the largest |cell|');
  assert.match(vm.text[0], /^\+3\.00 /, 'the legend names the raw ends');
  for (const c of built.option.series[0].data) assert.ok(near(c[4], Math.sign(c[2]) * Math.sqrt(Math.abs(c[2]))));
  assert.deepEqual(vm.inRange.color, [...DIVERGING]);
  const [heat, bars] = built.option.series;
  assert.equal(heat.type, 'heatmap');
  assert.equal(heat.data.length, 10);
  assert.equal(bars.data.length, 11, 'all 11 parts (fewer than 12)');
  const values = bars.data.map((d) => d.value);
  assert.deepEqual(values.slice(0, 3), [-3.0, 2.0, 1.5], 'largest |value| first');
  for (const d of bars.data) assert.equal(d.itemStyle.color, d.value >= 0 ? POSITIVE : NEGATIVE);
  assert.equal(bars.data[0].head, 2, 'a head bar carries its head');
  assert.equal(bars.data[0].layer, 1);
  assert.equal(bars.data.find((d) => d.value === 1.5).head, -1, 'an MLP bar names no head');
  assert.equal(built.option.yAxis[1].data[0], 'explain.headShort{"l":1,"h":2}');
  assert.ok(built.option.xAxis[1].min < -3 && built.option.xAxis[1].max > 3, 'a symmetric bar axis');
  assert.equal(buildLogitOption(data, { ...ctx, topK: 4 }).option.series[1].data.length, 4);
  // the caption: the logit, the sum, the gap, the fixed norm scale; no soft-cap here
  assert.match(built.caption, /explain\.logitCaption\{/);
  assert.match(built.caption, /"target":"“·blue”"/);
  assert.match(built.caption, /explain\.normFixed\{"pos":7,"q":6/);
  assert.doesNotMatch(built.caption, /beforeSoftcap/);
  assert.equal(built.meta['target-id'], 42);
  assert.equal(built.meta['contrast-id'], '');
  assert.equal(built.meta.total, data.total.toFixed(4));
});

test('the heatmap names the KV head of each group of heads', () => {
  const narrow = buildLogitOption(logitAnswer(), { ...ctx, width: 300 }).option.xAxis[0];
  const labels = narrow.data.map((v, i) => narrow.axisLabel.formatter(v, i));
  assert.deepEqual(labels, ['h0\nkv0', 'h1\n ', 'h2\nkv1', 'h3\n ', 'explain.mlp'], 'narrow: under the first head of each group');
  const wide = buildLogitOption(logitAnswer(), { ...ctx, width: 1400 }).option.xAxis[0];
  assert.deepEqual(wide.data.map((v, i) => wide.axisLabel.formatter(v, i)).slice(0, 4), ['h0\nkv0', 'h1\nkv0', 'h2\nkv1', 'h3\nkv1']);
});

test('buildLogitOption: a contrast and a soft-cap are named in the caption', () => {
  const data = logitAnswer({ contrast: { id: 9, text: ' red' }, softcap: 30 });
  const built = buildLogitOption(data, ctx);
  assert.match(built.caption, /explain\.logitCaptionDiff\{.*"contrast":"“·red”"/);
  assert.match(built.caption, /explain\.beforeSoftcap\{"cap":30\}/);
  assert.equal(built.meta['contrast-id'], 9);
  assert.equal(built.option.xAxis[1].name, 'explain.diffX');
});

test('the tooltips escape token text', () => {
  const data = { ...inputsAnswer(), tokens: ['a', '<img src=x onerror=alert(1)>', 'c', 'd'] }; // position 1 scores highest
  const built = buildInputsOption(data, { t, width: 900, height: 600 });
  const html = built.option.tooltip.formatter({ seriesId: 'inputs-top', dataIndex: 0, data: built.option.series[0].data[0] });
  assert.doesNotMatch(html, /<img/);
  assert.match(html, /&lt;img/);
});

test('logitClickHead: a head cell or a head bar opens that head; MLP cells do not', () => {
  const built = buildLogitOption(logitAnswer(), ctx);
  const heat = built.option.series[0].data;
  const cell = heat.find((c) => c[3] === 3 && c[1] === 0);
  assert.deepEqual(logitClickHead({ seriesId: 'logit-heat', data: cell }), { layer: 0, head: 3 });
  assert.equal(logitClickHead({ seriesId: 'logit-heat', data: heat.find((c) => c[3] === -1) }), null);
  assert.deepEqual(logitClickHead({ seriesId: 'logit-top', data: built.option.series[1].data[0] }), { layer: 1, head: 2 });
  assert.equal(logitClickHead({ seriesId: 'attention', data: [1, 2, 3, 4] }), null);
});

// ---------- input attribution ----------
function inputsAnswer(over = {}) {
  return {
    run_id: 'abcd1234',
    position: 4,
    query_position: 3,
    method: 'grad_x_input',
    target: { id: 42, text: ' blue' },
    contrast: null,
    tokens: ['a', 'b', 'c', 'd'],
    scores: [0.1, -0.8, 0.3, 0.05],
    seconds: 0.02,
    ...over,
  };
}

test('topTokens picks by |score| and keeps the sign', () => {
  assert.deepEqual(topTokens([0.1, -0.8, 0.3, 0.05], 2), [{ position: 1, score: -0.8 }, { position: 2, score: 0.3 }]);
  assert.equal(topTokens(new Array(40).fill(0).map((_, i) => i - 20)).length, 12);
});

test('chipShades and the legend: signed methods diverge, value-norm is one-sided', () => {
  const shades = chipShades([0.1, -0.8, 0.3, 0]);
  assert.equal(shades.length, 4);
  assert.equal(shades[1].bg, DIVERGING[0], 'the most negative chip is the blue end');
  assert.equal(shades[3].bg, DIVERGING[3], 'a zero chip is neutral');
  const [r, , b] = hexToRgb(shades[2].bg);
  assert.ok(r > b);
  for (const s of shades) assert.match(s.fg, /^#(000000|ffffff)$/);
  const signed = inputsLegend([0.1, -0.8], 'grad_x_input', t);
  assert.match(signed.lo, /^−0\.800 explain\.lowers$/);
  assert.match(signed.hi, /^\+0\.800 explain\.raises$/);
  const unsigned = inputsLegend([0.1, 0.4], 'value_norm', t);
  assert.equal(unsigned.lo, '0');
  assert.ok(!unsigned.gradient.includes(DIVERGING[0]), 'no negative half for an unsigned score');
});

test('buildInputsOption: the top tokens as signed bars, and the completeness of IG', () => {
  const built = buildInputsOption(inputsAnswer(), ctx);
  const bars = built.option.series[0];
  assert.deepEqual(bars.data.map((d) => d.position), [1, 2, 0, 3]);
  assert.deepEqual(bars.data.map((d) => d.itemStyle.color), [NEGATIVE, POSITIVE, POSITIVE, POSITIVE]);
  assert.equal(built.option.series.length, 1, 'no per-layer heatmap without layers');
  assert.equal(built.meta['top-position'], 1);
  assert.doesNotMatch(built.caption, /completeness/);
  const ig = buildInputsOption(inputsAnswer({
    method: 'integrated_gradients', steps: 16, completeness: { sum: -0.35, expected: -0.36, gap: 0.01 },
  }), ctx);
  assert.match(ig.caption, /explain\.completeness\{"sum":"-0\.3500","expected":"-0\.3600","gap":"0\.0100","steps":16\}/);
  assert.equal(ig.meta.gap, 0.01);
});

test('buildInputsOption: value-norm has a one-sided axis and a per-layer heatmap of the top tokens', () => {
  const layers = [[0.5, 0.2, 0.2, 0.1], [0.1, 0.6, 0.1, 0.2]];
  const built = buildInputsOption(inputsAnswer({
    method: 'value_norm', scores: [0.3, 0.4, 0.15, 0.15], layers,
  }), { ...ctx, topK: 3 });
  assert.equal(built.option.xAxis[0].min, 0);
  const heat = built.option.series[1];
  assert.equal(heat.type, 'heatmap');
  // columns: the top 3 tokens (1, 0, then 2 by order) in position order
  assert.deepEqual(built.option.xAxis[1].data.map((s) => s.split(' ')[0]), ['#0', '#1', '#2']);
  assert.equal(heat.data.length, 2 * 3);
  assert.deepEqual(heat.data.find((c) => c[0] === 1 && c[1] === 1), [1, 1, 0.6]);
  assert.equal(built.option.visualMap.min, 0);
  assert.match(built.caption, /explain\.inputsCaptionUnsigned/);
});

// ---------- information flow ----------
function flowAnswer(over = {}) {
  const nodes = [
    { layer: 2, position: 5 },
    { layer: 1, position: 5 }, { layer: 1, position: 2 },
    { layer: 0, position: 5 }, { layer: 0, position: 2 }, { layer: 0, position: 0 },
  ];
  const edges = [
    { source: [1, 5], target: [2, 5], kind: 'residual', weight: 0.6, head: null, head_weight: null },
    { source: [1, 2], target: [2, 5], kind: 'attention', weight: 0.3, head: 4, head_weight: 0.7 },
    { source: [1, 5], target: [2, 5], kind: 'mlp', weight: 0.1, head: null, head_weight: null },
    { source: [0, 5], target: [1, 5], kind: 'residual', weight: 0.9, head: null, head_weight: null },
    { source: [0, 2], target: [1, 2], kind: 'residual', weight: 0.8, head: null, head_weight: null },
    { source: [0, 0], target: [1, 5], kind: 'attention', weight: 0.04, head: 1, head_weight: 0.5 },
    { source: [0, 3], target: [1, 5], kind: 'attention', weight: 0.2, head: 0, head_weight: 0.9 }, // no node at (0, 3)
  ];
  return { nodes, edges, tokens: ['a', 'b', 'c', 'd', 'e', 'f'], threshold: 0.05, seconds: 0.1, ...over };
}

test('filterFlowEdges keeps edges over the threshold whose both ends are nodes', () => {
  const { nodes, edges } = flowAnswer();
  const kept = filterFlowEdges(edges, 0.05, nodes);
  assert.equal(kept.length, 5, 'the 0.04 edge and the edge from a missing node are dropped');
  assert.ok(kept.every((e) => e.weight >= 0.05));
  assert.equal(filterFlowEdges(edges, 0.5, nodes).length, 3);
  assert.equal(filterFlowEdges([{ ...edges[0], kind: 'other' }], 0, nodes).length, 0);
});

test('buildFlowOption: nodes at (position column, layer), edges coloured by kind, width by weight', () => {
  const built = buildFlowOption({ position: 6, query_position: 5, ...flowAnswer() }, ctx);
  const graph = built.option.series[0];
  assert.equal(graph.type, 'graph');
  assert.equal(graph.coordinateSystem, 'cartesian2d');
  assert.equal(graph.data.length, 6);
  const { positions } = flowColumns(flowAnswer().nodes);
  assert.deepEqual(positions, [0, 2, 5]);
  const top = graph.data.find((n) => n.layer === 2);
  assert.deepEqual(top.value, [2, 2], 'position 5 is the third column; layer 2 is y = 2');
  assert.equal(top.itemStyle.color, '#f7768e', 'the explained node is highlighted');
  assert.equal(graph.links.length, 5);
  for (const l of graph.links) {
    assert.equal(l.lineStyle.color, EDGE_COLOURS[l.kind]);
    assert.equal(l.lineStyle.width, edgeWidth(l.weight));
    assert.equal(graph.data[l.source].layer + 1, graph.data[l.target].layer, 'an edge goes one layer up');
  }
  assert.ok(edgeWidth(0.9) > edgeWidth(0.1));
  assert.equal(built.meta.edges, 5);
  assert.match(built.caption, /explain\.flowCaption\{"pos":6,"q":5,.*"nodes":6,"edges":5,"threshold":0.05\}/);
});

test('a click on a flow edge names its head and weight', () => {
  const built = buildFlowOption({ position: 6, ...flowAnswer() }, ctx);
  const link = built.option.series[0].links.find((l) => l.kind === 'attention');
  const edge = flowClickEdge({ seriesId: 'flow', dataType: 'edge', data: link });
  assert.deepEqual(edge, { kind: 'attention', weight: 0.3, head: 4, head_weight: 0.7, source: [1, 2], target: [2, 5] });
  assert.equal(flowClickEdge({ seriesId: 'flow', dataType: 'node', data: {} }), null);
  const text = flowEdgeInfo(edge, t, (j) => `tok${j}`);
  assert.match(text, /^explain\.edgeInfoHead\{/);
  assert.match(text, /"layer":1,"head":4,"share":"0\.700"/);
  assert.match(text, /"weight":"0\.300"/);
  assert.match(flowEdgeInfo({ ...edge, kind: 'mlp', head: null }, t), /^explain\.edgeInfo\{/);
});

// ---------- target and contrast ----------
const probs = {
  token: { id: 42, text: ' blue', prob: 0.5, rank: 1 },
  candidates: [
    { id: 42, text: ' blue', prob: 0.5 }, { id: 9, text: ' red', prob: 0.2 }, { id: 7, text: ' <b>', prob: 0.1 },
  ],
};

test('runnerUp is the best candidate other than the target', () => {
  assert.equal(runnerUp(probs.candidates, 42).id, 9);
  assert.equal(runnerUp(probs.candidates, 9).id, 42);
  assert.equal(runnerUp([], 9), null);
});

test('choices: the token itself, then the candidates; the contrast list starts with none, then the runner-up', () => {
  const c = choices(probs, null, t);
  assert.deepEqual(c.targets.map((o) => o.value), ['', '9', '7']);
  assert.deepEqual(c.contrasts.map((o) => o.value), ['', '9', '7']);
  assert.match(c.contrasts[1].text, /explain\.runnerUp$/);
  assert.equal(c.runnerUpId, 9);
  const other = choices(probs, 9, t);
  assert.deepEqual(other.contrasts.map((o) => o.value), ['', '42', '7'], 'with another target, the token itself can be the contrast');
  assert.equal(other.runnerUpId, 42);
});

test('whyNotPatch opens Explain on the logit view with the contrast', () => {
  assert.deepEqual(whyNotPatch(9), { view: 'explain', explainMode: 'logit', explainTarget: null, explainContrast: 9, explainEdge: null });
});

// ---------- the feature on a fake DOM ----------
function makeExplain(answers = {}) {
  const doc = fakeDoc();
  const store = createStore(initialState());
  const calls = [];
  const api = new Proxy({}, {
    get: (_, name) => (...args) => {
      calls.push([name, ...args]);
      const a = answers[name];
      return typeof a === 'function' ? a(...args) : Promise.resolve(a ?? {});
    },
  });
  const feature = createExplain({ doc, api, t, store, conversation: null, select: (p) => store.set({ selected: p }) });
  const registry = createRegistry();
  registry.register(feature);
  return { doc, store, calls, feature, registry, $: (id) => doc.getElementById(id) };
}

const run = { run_id: 'abcd1234', tokens: Array.from({ length: 8 }, (_, i) => ({ position: i, text: `t${i}` })) };

test('the feature registers the one shape with the explain view', () => {
  const { registry } = makeExplain();
  assert.deepEqual(registry.views(), ['explain']);
  const keys = new Set(Object.keys(initialState()));
  for (const k of registry.watched()) assert.ok(keys.has(k), `${k} is a state key`);
});

test('position 0 gives a clear message and asks the server nothing', async () => {
  const { registry, calls, store } = makeExplain();
  const built = await registry.load('explain', run, { t, state: store.get(), selected: 0 });
  assert.deepEqual(built, { message: 'explain.position0' });
  assert.equal(calls.length, 0);
});

test('the logit loader asks for the selected position, target and contrast', async () => {
  const { registry, calls, store } = makeExplain({
    tokenProbs: Promise.resolve(probs), explainLogit: Promise.resolve(logitAnswer({ contrast: { id: 9, text: ' red' } })),
  });
  store.set({ run, selected: 7, explainContrast: 9 });
  const built = await registry.load('explain', run, { ...ctx, state: store.get(), selected: 7 });
  assert.deepEqual(calls[0], ['tokenProbs', 'abcd1234', 7, CANDIDATES_N]);
  assert.deepEqual(calls[1][0], 'explainLogit');
  assert.deepEqual(calls[1][1], { run_id: 'abcd1234', position: 7, target: null, contrast: 9 });
  assert.equal(built.meta['contrast-id'], 9);
  assert.equal(store.get().explainCandidates.data, probs, 'the candidates fill the selects');
});

test('a new selection drops the target and contrast; why-not keeps its contrast', () => {
  const { store } = makeExplain({ tokenProbs: Promise.resolve(probs) });
  store.set({ run, selected: 7 });
  store.set({ explainContrast: 9, explainTarget: 7 });
  store.set({ selected: 5 });
  assert.equal(store.get().explainContrast, null);
  assert.equal(store.get().explainTarget, null);
  store.set({ ...whyNotPatch(9), selected: 6 });
  assert.equal(store.get().explainContrast, 9);
  assert.equal(store.get().view, 'explain');
});

test('a head click opens that head in the Heads row view at the query row', () => {
  const { feature, store } = makeExplain();
  store.set({ run, selected: 7 });
  const selected = [];
  const handled = feature.onChartClick(
    { seriesId: 'logit-heat', data: [1, 1, -3.0, 2] },
    { view: 'explain', meta: { position: 7 } },
    { select: (p) => { selected.push(p); store.set({ selected: p }); } },
  );
  assert.equal(handled, true);
  assert.equal(store.get().view, 'heads');
  assert.equal(store.get().headsMode, 'row');
  assert.equal(store.get().rowHead, 2);
  assert.equal(store.get().layer, 1);
  assert.deepEqual(selected, [6], 'the row that predicted position 7');
  assert.equal(feature.onChartClick({ seriesId: 'logit-heat', data: [1, 1, -3.0, 2] }, { view: 'probs', meta: {} }, {}), false);
});

test('a flow edge click puts the edge in the store and the info line names it', () => {
  const { feature, store, $ } = makeExplain();
  store.set({ run, selected: 7, explainMode: 'flow' });
  const built = buildFlowOption({ position: 6, ...flowAnswer() }, ctx);
  const link = built.option.series[0].links.find((l) => l.kind === 'attention');
  assert.equal(feature.onChartClick({ seriesId: 'flow', dataType: 'edge', data: link }, { view: 'explain', meta: {} }, {}), true);
  assert.equal(store.get().explainEdge.head, 4);
  assert.match($('explain-info').textContent, /explain\.edgeInfoHead.*"head":4/);
  assert.equal($('explain-info').dataset.head, '4');
});

test('integrated gradients run as a job: progress is followed and Stop cancels it', async () => {
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  const { registry, calls, store } = makeExplain({
    tokenProbs: Promise.resolve(probs),
    explainInputs: () => held,
    job: Promise.resolve({ done: 3, total: 16, status: 'running' }),
    cancel: Promise.resolve({}),
  });
  store.set({ run, selected: 7, explainMode: 'inputs', explainMethod: 'integrated_gradients', explainSteps: 16 });
  let stopFn = null;
  const progress = [];
  const pending = registry.load('explain', run, {
    ...ctx, state: store.get(), selected: 7, onStop: (fn) => { stopFn = fn; }, progress: (p) => progress.push(p),
  });
  await new Promise((resolve) => setTimeout(resolve, 900));
  const req = calls.find((c) => c[0] === 'explainInputs');
  assert.equal(req[1].method, 'integrated_gradients');
  assert.equal(req[1].steps, 16);
  assert.match(req[1].job_id, /^[0-9a-f]{16}$/);
  assert.ok(progress.some((p) => p.text === 'explain.progressSteps{"method":"explain.method.integrated_gradients","done":3,"total":16}'), 'the job progress is shown, in gradient passes');
  assert.equal(typeof stopFn, 'function');
  stopFn();
  const built = await pending;
  assert.equal(built.stopped, true);
  assert.match(built.message, /^view\.stopped/);
  assert.deepEqual(calls.find((c) => c[0] === 'cancel').slice(1, 2), [req[1].job_id]);
  release({});
});

test('value-norm needs no job and asks without steps', async () => {
  const { registry, calls, store } = makeExplain({
    tokenProbs: Promise.resolve(probs),
    explainInputs: Promise.resolve(inputsAnswer({ method: 'value_norm', scores: [0.4, 0.3, 0.2, 0.1], layers: [[0.4, 0.3, 0.2, 0.1]] })),
  });
  store.set({ run, selected: 4, explainMode: 'inputs', explainMethod: 'value_norm' });
  const built = await registry.load('explain', run, { ...ctx, state: store.get(), selected: 4, onStop: () => {} });
  const req = calls.find((c) => c[0] === 'explainInputs');
  assert.equal(req[1].method, 'value_norm');
  assert.equal(req[1].steps, null);
  assert.equal(req[1].job_id, undefined);
  assert.equal(built.meta.method, 'value_norm');
});
