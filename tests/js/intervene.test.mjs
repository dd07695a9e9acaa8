// The interventions' pure parts (views/intervene.js): head selection with GQA groups, the
// ablation / patch / steer request bodies, the effect rows (floored KL never averaged), the
// patching normalisation and heatmap, the steering chart, and the text-only renderers.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  KL_FLOOR_NATS, ablateBody, buildEffectOption, buildPatchOption, buildSteerOption, decorateHeadsGrid,
  effectClickPosition, effectFromApi, effectStats, headTargets, headsText, interventionText, klText, kvGroupOf,
  mostAffected, normalisePatch, parseAlphas, patchBody, patchFromApi, patchProblem, promptLines, renderAffected,
  renderSteerColumns, steerBody, toggleHead,
} from '../../llmvis/web/static/js/views/intervene.js';
import { effectRunId, interveneExportDetail } from '../../llmvis/web/static/js/intervene.js';
import { runLabel, runMeta } from '../../llmvis/web/static/js/forktree.js';
import { fakeDoc, near, t } from './helpers.mjs';

const SMOL = { num_heads: 9, num_kv_heads: 3, num_layers: 30 };

test('kvGroupOf: query heads share KV heads in contiguous groups', () => {
  assert.deepEqual(kvGroupOf(SMOL), [0, 0, 0, 1, 1, 1, 2, 2, 2]);
  assert.deepEqual(kvGroupOf({ num_heads: 4, num_kv_heads: 4 }), [0, 1, 2, 3]);
  assert.deepEqual(kvGroupOf({ num_heads: 8, num_kv_heads: 1 }), [0, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(kvGroupOf(null), []);
});

test('toggleHead: a click toggles one head, shift-click its whole KV group', () => {
  const kv = kvGroupOf(SMOL);
  let sel = toggleHead([], 2, 4, { kvGroup: kv });
  assert.deepEqual(sel, [[2, 4]]);
  sel = toggleHead(sel, 1, 0, { kvGroup: kv });
  assert.deepEqual(sel, [[1, 0], [2, 4]], 'sorted by layer, then head');
  sel = toggleHead(sel, 2, 4, { kvGroup: kv });
  assert.deepEqual(sel, [[1, 0]], 'a second click removes it');
  // shift on head 4 (group 1: heads 3, 4, 5) adds the group, even with one of them on already
  sel = toggleHead([[5, 3]], 5, 4, { group: true, kvGroup: kv });
  assert.deepEqual(sel, [[5, 3], [5, 4], [5, 5]]);
  sel = toggleHead(sel, 5, 5, { group: true, kvGroup: kv });
  assert.deepEqual(sel, [], 'shift on a fully picked group removes it');
  assert.equal(headsText([[1, 0], [2, 4]]), 'L1.h0, L2.h4');
  assert.equal(headsText([[0, 0], [0, 1], [0, 2]], 2), 'L0.h0, L0.h1 +1');
});

test('headTargets and ablateBody: whole KV groups become kv_group targets', () => {
  const kv = kvGroupOf(SMOL);
  assert.deepEqual(headTargets([[3, 0], [3, 1], [3, 2], [3, 4], [7, 8]], kv), [
    { kind: 'kv_group', layer: 3, group: 0 }, { kind: 'head', layer: 3, head: 4 }, { kind: 'head', layer: 7, head: 8 },
  ]);
  // MHA: groups of one head stay heads
  assert.deepEqual(headTargets([[0, 1]], [0, 1, 2, 3]), [{ kind: 'head', layer: 0, head: 1 }]);
  assert.deepEqual(ablateBody('r1', { target: 'heads', heads: [[2, 3], [2, 4]], kvGroup: kv, mode: 'zero' }).body, {
    run_id: 'r1', targets: [{ kind: 'head', layer: 2, head: 3 }, { kind: 'head', layer: 2, head: 4 }], mode: 'zero', free: false,
  });
  assert.deepEqual(ablateBody('r1', { target: 'mlp', layer: 5, mode: 'mean', numLayers: 30 }).body.targets, [{ kind: 'mlp', layer: 5 }]);
  assert.deepEqual(ablateBody('r1', { target: 'attention', layer: 0, mode: 'zero', numLayers: 30 }).body.targets, [{ kind: 'attention', layer: 0 }]);
  assert.equal(ablateBody('r1', { target: 'heads', heads: [], mode: 'zero' }).error, 'ablate.noHeads');
  assert.equal(ablateBody('r1', { target: 'mlp', layer: 30, mode: 'zero', numLayers: 30 }).error, 'ablate.badLayer');
  assert.equal(ablateBody('r1', { target: 'mlp', layer: 2, mode: 'half' }).error, 'ablate.badMode');
  assert.equal(ablateBody('r1', { target: 'embed', layer: 2, mode: 'zero' }).error, 'ablate.badTarget');
});

test('interventionText names what changed; the branch tree labels intervention runs', () => {
  const spec = { type: 'ablate', mode: 'zero', targets: [{ kind: 'head', layer: 2, head: 3 }, { kind: 'kv_group', layer: 4, group: 1 }, { kind: 'mlp', layer: 5 }] };
  assert.equal(interventionText(spec, t), `tree.ablateText${JSON.stringify({ mode: 'ablate.mode.zero', what: `L2.h3, L4.kv1, ablate.mlpOf${JSON.stringify({ l: 5 })}` })}`);
  assert.equal(interventionText(null, t), '');
  const run = { run_id: 'c', kind: 'intervention', parent_id: 'p', intervention: spec, tokens: [], num_prompt_tokens: 0 };
  const meta = runMeta(run, 3);
  assert.deepEqual(meta.intervention, spec);
  assert.equal(runLabel(meta, t), `#3 ${interventionText(spec, t)}`);
});

test('decorateHeadsGrid outlines the picked heads and makes layer labels clickable', () => {
  const built = {
    option: { yAxis: { type: 'category' }, series: [{ id: 'heads', data: [] }, { id: 'selected-head', symbolSize: [30, 12], data: [] }] },
    meta: { mode: 'grid' },
  };
  const out = decorateHeadsGrid(built, [[2, 4], [3, 0]], { picking: true });
  const s = out.option.series.find((x) => x.id === 'ablate-selected');
  assert.deepEqual(s.data, [[4, 2], [0, 3]], 'x = head, y = layer, like the grid cells');
  assert.deepEqual(s.symbolSize, [30, 12]);
  assert.equal(out.option.yAxis.triggerEvent, true);
  assert.equal(out.meta['ablate-selected'], 2);
  assert.equal(out.meta.picking, 'true');
  assert.equal(built.option.series.length, 2, 'the input is not changed');
  assert.equal(decorateHeadsGrid({ ...built, caption: 'c' }, [], { picking: true, t }).caption, 'c · ablate.pickingHint');
  assert.equal(decorateHeadsGrid({ ...built, caption: 'c' }, [], { picking: false, t }).caption, 'c');
  // decorating twice keeps one overlay
  assert.equal(decorateHeadsGrid(out, [], {}).option.series.filter((x) => x.id === 'ablate-selected').length, 1);
});

const EFFECTS = {
  run_id: 'c',
  parent_id: 'p',
  intervention: { type: 'ablate', mode: 'zero', targets: [{ kind: 'head', layer: 1, head: 2 }] },
  align: 'position',
  divergence_position: null,
  positions: [
    { position: 5, parent_position: 5, text: ' a', same_token: true, delta_logprob: -0.5, kl: 0.2, kl_floored: false },
    { position: 6, parent_position: 6, text: '<b>', same_token: true, delta_logprob: -9, kl: 23.1, kl_floored: true },
    { position: 7, parent_position: 7, text: ' c', same_token: true, delta_logprob: 0.1, kl: 0.6, kl_floored: false },
    { position: 8, parent_position: 8, text: ' d', same_token: true, delta_logprob: 0, kl: 0, kl_floored: false },
  ],
};

test('effect rows: the floored KL is shown as a bound and never averaged in', () => {
  const effect = effectFromApi(EFFECTS, t);
  assert.equal(effect.alignment, 'position');
  assert.equal(effect.rows.length, 4);
  const stats = effectStats(effect.rows);
  // independent: mean over the three measured KLs only; |Δ| over all four
  assert.ok(near(stats.meanKl, (0.2 + 0.6 + 0) / 3));
  assert.ok(near(stats.meanAbsDelta, (0.5 + 9 + 0.1 + 0) / 4));
  assert.equal(stats.floored, 1);
  assert.equal(stats.measured, 3);
  assert.equal(klText(23.1, true, t), `effect.floored${JSON.stringify({ n: KL_FLOOR_NATS })}`);
  assert.equal(klText(0.123456, false, t), '0.1235');
  assert.deepEqual(mostAffected(effect.rows, 3).map((r) => r.position), [6, 7, 5], 'floored first, then by KL; unchanged rows left out');
});

test('buildEffectOption: Δ bars, measured KL line, floored triangles, alignment in the caption', () => {
  const effect = effectFromApi({ ...EFFECTS, align: 'edit', divergence_position: 7 }, t);
  const { option, caption, meta } = buildEffectOption(effect, { t, width: 800, height: 600, selected: 6 });
  const byId = Object.fromEntries(option.series.map((s) => [s.id, s]));
  assert.deepEqual(byId.delta.data.map((d) => d.value), [[5, -0.5], [6, -9], [7, 0.1], [8, 0]]);
  assert.deepEqual(byId.kl.data, [[5, 0.2], [6, null], [7, 0.6], [8, 0]], 'the floored value is not drawn as a measurement');
  assert.equal(byId['kl-floored'].data.length, 1);
  assert.equal(byId['kl-floored'].data[0][0], 6);
  assert.ok(byId['kl-floored'].data[0][1] > 0.6, 'drawn above every measured value');
  assert.equal(meta.alignment, 'edit');
  assert.equal(meta.floored, 1);
  assert.equal(meta.divergence, 7);
  assert.ok(caption.includes('effect.align.edit'), caption);
  assert.ok(caption.includes('effect.flooredCount'), caption);
  assert.ok(caption.includes('"kl":"0.267"'), `mean of the measured KLs in the caption: ${caption}`);
  // the tooltip escapes token text
  const tip = option.tooltip.formatter([{ axisValue: 6 }]);
  assert.ok(tip.includes('&lt;b&gt;') && !tip.includes('<b>&lt;') && !tip.includes('<b><b>'), tip);
  assert.equal(effectClickPosition({ seriesId: 'delta', data: { value: [7, 0.1] } }), 7);
  assert.equal(effectClickPosition({ seriesId: 'kl-floored', data: [6, 1] }), 6);
  assert.equal(effectClickPosition({ seriesId: 'other' }), null);
});

test('normalisePatch: 1 = clean, 0 = corrupted; null when they are equal', () => {
  const values = [[2, 5, -1], [null, 3.5, 2]];
  const n = normalisePatch(values, 5, 2);
  // independent: (v - 2) / 3
  assert.deepEqual(n, [[0, 1, -1], [null, 0.5, 0]]);
  assert.deepEqual(normalisePatch([[1, 2]], 3, 3), [[null, null]]);
});

test('patchFromApi and buildPatchOption: the heatmap, its named scale and an escaped tooltip', () => {
  const answer = {
    sweep: 'residual', metric: { type: 'logit_diff', position: 5, token_a: 123, token_b: 456, texts: { token_a: ' Paris', token_b: ' Rome' } },
    clean_metric: 4, corrupted_metric: -2, num_layers: 2, num_tokens: 3, num_heads: 9,
    values: [[-2, 1, 4], [-2, -2, 4]], normalized: [[0, 0.5, 1], [0, 0, 1]],
    tokens_clean: ['The', ' <E>', ' in'], tokens_corrupted: ['The', ' Col', ' in'], compute_s: 1.2,
  };
  const r = patchFromApi(answer, t);
  assert.deepEqual(r.columns, ['0 The', '1 ·<E>', '2 ·in']);
  assert.ok(r.metricText.includes('\\" Paris\\"'), r.metricText);
  const { option, meta, caption } = buildPatchOption(r, { t, width: 900, height: 600 });
  assert.equal(meta.cells, 6);
  assert.equal(meta.scale, 'viridis');
  assert.deepEqual(option.series[0].data[1], [1, 0, 0.5, 1]);
  assert.equal(option.visualMap.min, 0);
  assert.equal(option.visualMap.max, 1);
  assert.ok(caption.includes('patch.scaleName'));
  const tip = option.tooltip.formatter({ seriesId: 'patch', data: [1, 0, 0.5, 1] });
  assert.ok(tip.includes('·&lt;E&gt;'), tip);
  // a heads sweep labels heads; a value beyond 1 widens the scale rather than being clipped
  const heads = patchFromApi({ ...answer, sweep: 'heads', num_heads: 3, values: [[1, 2, 3]], normalized: [[0.2, 1.3, -0.4]] }, t);
  assert.deepEqual(heads.columns, ['h0', 'h1', 'h2']);
  const hb = buildPatchOption(heads, { t });
  assert.equal(hb.meta.sweep, 'heads');
  assert.equal(hb.option.visualMap.max, 1.3);
  assert.equal(hb.option.visualMap.min, -0.4);
});

test('patchProblem refuses mismatched token counts with both counts named', () => {
  const base = { clean: 'a b', corrupted: 'c d', cleanCount: 6, corruptedCount: 6, metric: 'logit_diff', tokenA: ' Paris', tokenB: ' Rome', position: -1, sweep: 'residual', headPosition: 'all' };
  assert.equal(patchProblem(base), null);
  assert.deepEqual(patchProblem({ ...base, corruptedCount: 7 }), { key: 'patch.countMismatch', vars: { a: 6, b: 7 } });
  assert.equal(patchProblem({ ...base, corrupted: '  ' }).key, 'patch.needPrompts');
  assert.equal(patchProblem({ ...base, cleanCount: null }).key, 'patch.counting');
  assert.equal(patchProblem({ ...base, tokenB: '' }).key, 'patch.needContrast');
  assert.equal(patchProblem({ ...base, metric: 'logprob', tokenB: '' }), null);
  assert.equal(patchProblem({ ...base, position: 6 }).key, 'patch.badPosition');
  assert.equal(patchProblem({ ...base, position: -6 }), null);
  assert.equal(patchProblem({ ...base, sweep: 'heads', headPosition: 9 }).key, 'patch.badHeadPosition');
  assert.equal(patchProblem({ ...base, sweep: 'heads', headPosition: 2 }), null);
});

test('patchBody follows the contract', () => {
  const f = { clean: 'x', corrupted: 'y', metric: 'logit_diff', tokenA: ' Paris', tokenB: ' Rome', position: -1, sweep: 'heads', headPosition: 3, jobId: 'abcdef0123456789' };
  assert.deepEqual(patchBody(f), {
    clean: { text: 'x' }, corrupted: { text: 'y' }, use_chat_template: false,
    metric: { type: 'logit_diff', token_a: ' Paris', token_b: ' Rome', position: -1 },
    sweep: 'heads', head_position: 3, job_id: 'abcdef0123456789',
  });
  const lp = patchBody({ ...f, metric: 'logprob', sweep: 'residual', jobId: null });
  assert.deepEqual(lp.metric, { type: 'logprob', token: ' Paris', position: -1 });
  assert.ok(!('head_position' in lp) && !('job_id' in lp));
});

test('parseAlphas, promptLines and steerBody', () => {
  assert.deepEqual(parseAlphas('-8, 0, 8').alphas, [-8, 0, 8]);
  assert.deepEqual(parseAlphas('\u22124; 2.5 2.5 1e1').alphas, [-4, 2.5, 10], 'Unicode minus, duplicates dropped');
  assert.equal(parseAlphas('').error, 'steer.needAlpha');
  assert.equal(parseAlphas('1, two').error, 'steer.badAlpha');
  assert.equal(parseAlphas('1e9').error, 'steer.badAlpha');
  assert.equal(parseAlphas('1 2 3 4 5 6 7 8').error, 'steer.tooManyAlphas');
  assert.deepEqual(promptLines(' I love this \n\n Great \n'), ['I love this', 'Great']);
  const ok = steerBody('r', { layer: 5, source: 'mean_diff', positive: ['a'], negative: ['b'], alphas: [0, 4], fromPosition: null });
  assert.deepEqual(ok.body, { run_id: 'r', layer: 5, alphas: [0, 4], vector: { source: 'mean_diff', positive: ['a'], negative: ['b'] }, free: true, normalize: false });
  assert.deepEqual(steerBody('r', { layer: 1, source: 'token', token: ' happy', alphas: [2], fromPosition: 3 }).body.vector, { source: 'token', token: ' happy' });
  assert.equal(steerBody('r', { layer: 1, source: 'token', token: ' happy', alphas: [2], fromPosition: 3 }).body.from_position, 3);
  assert.deepEqual(steerBody('r', { layer: 1, source: 'direction', direction: [1, 2], alphas: [2] }).body.vector, { source: 'raw', values: [1, 2] });
  assert.equal(steerBody('r', { layer: 1, source: 'mean_diff', positive: [], negative: ['b'], alphas: [1] }).error, 'steer.needPrompts');
  assert.equal(steerBody('r', { layer: 1, source: 'token', token: '', alphas: [1] }).error, 'steer.needToken');
});

test('buildSteerOption: one KL line per alpha, floored values only as markers', () => {
  const mk = (rows) => effectFromApi({ ...EFFECTS, positions: rows }, t);
  const items = [
    { alpha: -4, effect: mk([{ position: 3, kl: 0.5, kl_floored: false, delta_logprob: 0 }]) },
    { alpha: 0, effect: mk([{ position: 3, kl: 0, kl_floored: false, delta_logprob: 0 }]) },
    { alpha: 4, effect: mk([{ position: 3, kl: 30, kl_floored: true, delta_logprob: null }, { position: 4, kl: 1, kl_floored: false, delta_logprob: -1 }]) },
  ];
  const { option, meta } = buildSteerOption(items, { t });
  assert.equal(meta.alphas, '-4,0,4');
  const lines = option.series.filter((s) => s.type === 'line');
  assert.equal(lines.length, 3);
  assert.deepEqual(lines[2].data, [[3, null], [4, 1]]);
  const marks = option.series.filter((s) => s.type === 'scatter');
  assert.equal(marks.length, 1);
  assert.ok(marks[0].data[0][1] > 1);
  assert.notEqual(lines[0].lineStyle.color, lines[2].lineStyle.color, 'negative and positive alphas differ in colour');
});

test('the renderers put token text in with textContent only', () => {
  const doc = fakeDoc();
  const root = doc.createElement('div');
  const rows = effectFromApi(EFFECTS, t).rows;
  renderAffected(root, mostAffected(rows, 2), { t, doc });
  const list = root.children[1];
  assert.equal(list.children.length, 2);
  const btn = list.children[0].children[0];
  assert.equal(btn.dataset.position, '6');
  assert.equal(btn.children[1].textContent, '<b>', 'hostile text stays text');
  assert.ok(btn.children[2].textContent.includes('effect.floored'));
  const cols = doc.createElement('div');
  renderSteerColumns(cols, [{ alpha: 4, runId: 'x1', text: '<img src=x onerror=alert(1)>', divergence: 9 }], { t, doc });
  const col = cols.children[0].children[0];
  assert.equal(col.dataset.alpha, '4');
  assert.equal(col.children[1].textContent, '<img·src=x·onerror=alert(1)>');
});

test('effectRunId and the export names', () => {
  const sessionRuns = new Map([['p', { run_id: 'p', kind: 'generate' }], ['c', { run_id: 'c', kind: 'intervention' }]]);
  assert.equal(effectRunId({ run: { run_id: 'c', kind: 'intervention' }, sessionRuns, diffB: null }), 'c');
  assert.equal(effectRunId({ run: { run_id: 'p', kind: 'generate' }, sessionRuns, diffB: 'c' }), 'c');
  assert.equal(effectRunId({ run: { run_id: 'p', kind: 'generate' }, sessionRuns, diffB: 'p' }), null);
  assert.equal(interveneExportDetail('effect', { run: { run_id: '0123456789abcdef' } }), 'run-01234567');
  assert.equal(interveneExportDetail('patch', { patchResult: { seq: 1, result: { sweep: 'heads' } } }), 'heads');
  assert.equal(interveneExportDetail('steer', { steerResult: { layer: 5 } }), 'L5');
  assert.equal(interveneExportDetail('lens', {}), undefined);
});

// The Diff tab with the server's alignment and floored flags (issue 15).
const tok = (position, id, text, source = 'generated') => ({ position, id, text, source });
const ALIGNED = {
  run_a: 'aa',
  run_b: 'bb',
  align: 'edit',
  tokens_a: [tok(0, 1, 'A', 'prompt'), tok(1, 2, ' x'), tok(2, 3, ' y'), tok(3, 4, ' z')],
  tokens_b: [tok(0, 1, 'A', 'prompt'), tok(1, 2, ' x'), tok(2, 9, ' <q>'), tok(3, 3, ' y'), tok(4, 4, ' z')],
  same: [true, true, false, false],
  common_prefix: 2,
  divergence_position: 2,
  pairs: [[0, 0], [1, 1], [null, 2], [2, 3], [3, 4]],
  params_a: {},
  params_b: {},
  kl: [
    { position: 1, position_b: 1, kl_raw: 0, kl_sampling: 0, in_common_prefix: true },
    { position: 2, position_b: 3, kl_raw: 0.5, kl_sampling: 23.02, kl_raw_floored: false, kl_sampling_floored: true, in_common_prefix: false },
    { position: 3, position_b: 4, kl_raw: 0.25, kl_sampling: 0.75, kl_raw_floored: false, kl_sampling_floored: false, in_common_prefix: false },
  ],
};

test('diff: floored KL rows are gaps with a marker, never in the mean; the alignment is named', async () => {
  const { buildDiffOption, meanKlAfter, alignNote, renderDiffTokens } = await import('../../llmvis/web/static/js/views/diff.js');
  // independent: the sampling mean is over the one measured row after the prefix
  assert.equal(meanKlAfter(ALIGNED, 'kl_sampling'), 0.75);
  assert.equal(meanKlAfter(ALIGNED, 'kl_raw'), (0.5 + 0.25) / 2);
  const { option, caption, meta } = buildDiffOption(ALIGNED, { t });
  const samp = option.series.find((s) => s.id === 'kl-sampling');
  assert.deepEqual(samp.data, [[1, 0], [2, null], [3, 0.75]]);
  assert.equal(samp.markPoint.data.length, 1);
  assert.equal(samp.markPoint.data[0].coord[0], 2);
  assert.equal(option.series.find((s) => s.id === 'kl-raw').markPoint.data.length, 0);
  assert.equal(meta.alignment, 'edit');
  assert.equal(meta.floored, 1);
  assert.ok(caption.endsWith(alignNote(ALIGNED, t)) && caption.includes('diff.align.edit') && caption.includes('diff.flooredCount'), caption);
  assert.equal(alignNote({ kl: [] }, t), '', 'an older answer without align adds nothing');
  // the tooltip names token B at its aligned position and the floored value as a bound
  const tip = option.tooltip.formatter([{ axisValue: 2 }]);
  assert.ok(tip.includes('·y') && tip.includes('diff.floored'), tip);
  // chips: one column per aligned pair; the insertion has an empty A side
  const doc = fakeDoc();
  const root = doc.createElement('div');
  renderDiffTokens(root, ALIGNED, { t, doc });
  const grid = root.children[1];
  const cols = grid.children.filter((c) => c.dataset?.position != null);
  assert.equal(cols.length, 5);
  const insertion = cols[2];
  assert.equal(insertion.children[1].className, 'diff-chip empty');
  assert.equal(insertion.children[2].textContent, '·<q>');
  assert.ok(cols[3].className.includes('same'), 'y matches y after the insertion');
  assert.equal(cols.filter((c) => c.className.includes('divergence')).length, 1, 'one divergence mark');
});

// The feature on a fake DOM: one registry shape; the controls write the store; Ablate sends the
// picked heads and puts the linked run on show with the Effect tab.
test('createIntervene: its shape, the pick toggle, and Ablate from the picked heads', async () => {
  const { createIntervene } = await import('../../llmvis/web/static/js/intervene.js');
  const { createRegistry } = await import('../../llmvis/web/static/js/registry.js');
  const { initialState } = await import('../../llmvis/web/static/js/state.js');
  const { createStore } = await import('../../llmvis/web/static/js/store.js');
  const doc = fakeDoc();
  const store = createStore(initialState());
  const calls = [];
  const child = { run_id: 'c1', kind: 'intervention', parent_id: 'p1', tokens: [] };
  const api = {
    ablate: async (body) => { calls.push(['ablate', body]); return { run: child, effects: EFFECTS }; },
  };
  const shown = [];
  const registry = createRegistry();
  registry.register(createIntervene({
    doc, api, t, store, select: () => {}, showRun: (run) => { shown.push(run); store.set({ run }); },
    showError: (m) => store.set({ error: m }), clearError: () => store.set({ error: '' }),
  }));
  assert.deepEqual(registry.names(), ['intervene']);
  assert.deepEqual(registry.views(), ['effect', 'patch', 'steer']);
  const keys = new Set(Object.keys(initialState()));
  for (const k of registry.watched()) assert.ok(keys.has(k), `watched key ${k} is in initialState`);
  const $ = (id) => doc.getElementById(id);
  store.set({ model: SMOL, run: { run_id: 'p1', kind: 'generate', tokens: [] } });
  $('ablate-pick').fire('click');
  assert.equal(store.get().headsPick, true);
  assert.equal($('ablate-pick').getAttribute('aria-pressed'), 'true');
  store.set({ ablateHeads: [[2, 3], [2, 4]] });
  assert.equal($('ablate-count').textContent, `ablate.count${JSON.stringify({ n: 2 })}`);
  assert.equal($('ablate-run').disabled, false);
  $('ablate-mode').value = 'mean';
  $('ablate-mode').fire('change');
  $('ablate-run').fire('click');
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(calls, [['ablate', {
    run_id: 'p1', targets: [{ kind: 'head', layer: 2, head: 3 }, { kind: 'head', layer: 2, head: 4 }], mode: 'mean', free: false,
  }]]);
  assert.deepEqual(shown, [child]);
  assert.equal(store.get().view, 'effect');
  assert.equal(store.get().busy, null);
  // the Effect loader uses the inline effects (no second request) and fills the list
  const built = await registry.load('effect', child, { t, state: store.get(), selected: null, width: 800, height: 600 });
  assert.equal(built.meta['effect-run'], 'c1');
  assert.equal(built.meta.points, 4);
  assert.equal(calls.length, 1);
  // nothing picked: Ablate is refused with the reason
  store.set({ ablateHeads: [], run: { run_id: 'p1', kind: 'generate', tokens: [] } });
  $('ablate-run').fire('click');
  assert.equal(store.get().error, 'ablate.noHeads');
});
