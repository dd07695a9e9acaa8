// Long runs made readable (issue 13): the attention zoom window, the mini-map, the lens window
// and its time estimate, the projection's outlier labels, the export frame, and the segments
// message of a scored text. Pure functions, checked against brute-force loops written here.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  MAX_CELLS, ZOOM_MIN, brushWindow, buildAttentionOption, poolLowerTriangular, poolWindow, zoomRequest,
} from '../../llmvis/web/static/js/views/attention.js';
import {
  LENS_CONFIRM_FROM, LENS_WINDOW, buildLensOption, fmtSeconds, lensNeedsConfirm, lensVisibleColumns, lensWindowStart,
} from '../../llmvis/web/static/js/views/lens.js';
import { offScaleLabel } from '../../llmvis/web/static/js/views/projection.js';
import { exportFrame, frameLayout, frameSVG, wrapText } from '../../llmvis/web/static/js/exportframe.js';
import { segmentsNothingToSplit } from '../../llmvis/web/static/js/insights.js';
import { t } from './helpers.mjs';

/** A causal n × n attention matrix (full rows, zeros above the diagonal) from a seeded LCG. */
function causal(n, seed = 7) {
  let s = seed;
  const rnd = () => { s = (s * 1103515245 + 12345) % 2147483648; return s / 2147483648; };
  return Array.from({ length: n }, (_, i) => {
    const row = Array.from({ length: n }, (_, j) => (j <= i ? rnd() + 1e-3 : 0));
    const sum = row.reduce((a, b) => a + b, 0);
    return row.map((v) => v / sum);
  });
}

test('poolWindow on the whole lower triangle is poolLowerTriangular', () => {
  const m = causal(37);
  const tri = m.map((row, i) => row.slice(0, i + 1));
  for (const maxCells of [5, 16, 40]) {
    const a = poolWindow(tri, 0, 0, maxCells);
    const b = poolLowerTriangular(tri, maxCells);
    assert.equal(a.factor, b.factor);
    assert.deepEqual(a.cells, b.cells);
  }
});

test('poolWindow of a rectangle: block maxima by brute force, only blocks with a causal cell', () => {
  const n = 50;
  const m = causal(n);
  const [q0, q1, k0, k1] = [20, 44, 5, 37];
  const sub = m.slice(q0, q1).map((row) => row.slice(k0, k1));
  const f = 4;
  const got = poolWindow(sub, q0, k0, Math.ceil(32 / f));
  assert.equal(got.factor, f);
  const want = [];
  for (let bi = 0; bi * f < q1 - q0; bi += 1) {
    for (let bj = 0; bj * f < k1 - k0; bj += 1) {
      let v = 0;
      let causalCell = false;
      for (let i = bi * f; i < Math.min(q1 - q0, (bi + 1) * f); i += 1) {
        for (let j = bj * f; j < Math.min(k1 - k0, (bj + 1) * f); j += 1) {
          if (k0 + j <= q0 + i) causalCell = true;
          v = Math.max(v, sub[i][j]);
        }
      }
      if (causalCell) want.push([bj, bi, v]);
    }
  }
  const key = (c) => `${c[0]},${c[1]}`;
  assert.deepEqual(new Map(got.cells.map((c) => [key(c), c[2]])), new Map(want.map((c) => [key(c), c[2]])));
});

test('brushWindow turns a dragged rectangle of pooled cells into a causal window of positions', () => {
  const meta = { pool: 3, offset: 0 };
  // rows 60..90, columns 20..40 of a run of 290 pooled by 3
  assert.deepEqual(brushWindow(meta, [20, 60], [40, 90], 290), { q0: 180, q1: 273, k0: 60, k1: 123 });
  // corners in any order, fractional and out-of-range coordinates are clamped to cells
  assert.deepEqual(brushWindow(meta, [40.4, 90.2], [19.6, 59.8], 290), { q0: 180, q1: 273, k0: 60, k1: 123 });
  assert.deepEqual(brushWindow(meta, [-5, -5], [500, 500], 290), { q0: 0, q1: 290, k0: 0, k1: 290 });
  // keys after the last query and queries before the first key hold nothing: cut away
  assert.deepEqual(brushWindow(meta, [10, 5], [90, 40], 290), { q0: 30, q1: 123, k0: 30, k1: 123 });
  // wholly above the diagonal, or thinner than ZOOM_MIN positions: no zoom
  assert.equal(brushWindow(meta, [60, 5], [80, 20], 290), null);
  assert.equal(brushWindow({ pool: 1, offset: 0 }, [3, 10], [3 + ZOOM_MIN - 2, 30], 290), null);
  // inside a zoom: cells are counted from its offsets
  const zoomed = { pool: 1, offset: 180, koffset: 60, rows: 93, cols: 63 };
  assert.deepEqual(brushWindow(zoomed, [0, 0], [9, 19], 290), { q0: 180, q1: 200, k0: 60, k1: 70 });
  assert.deepEqual(zoomRequest({ q0: 180, q1: 200, k0: 60, k1: 70 }),
    { q_start: 180, q_end: 200, k_start: 60, k_end: 70, pool: MAX_CELLS });
});

test('a zoom window is drawn cell for cell, with a mini-map that outlines it on the whole run', () => {
  const n = 300;
  const m = causal(n);
  const [q0, q1, k0, k1] = [120, 180, 40, 100];
  const data = { layer: 1, head: 'mean', num_tokens: n, q_start: q0, k_start: k0, block: 1,
    matrix: m.slice(q0, q1).map((row) => row.slice(k0, k1)), tokens: Array.from({ length: n }, (_, i) => `w${i}`) };
  // the overview as the server pools it: blocks of 7 (300 / 48 rounded up)
  const b = 7;
  const side = Math.ceil(n / b);
  const overview = { block: b, matrix: Array.from({ length: side }, (_, i) => Array.from({ length: side }, (_, j) => {
    let v = 0;
    for (let a = i * b; a < Math.min(n, (i + 1) * b); a += 1) for (let c = j * b; c < Math.min(n, (j + 1) * b); c += 1) v = Math.max(v, m[a][c]);
    return v;
  })) };
  const built = buildAttentionOption(data, { t, selected: 130, scale: 'log', width: 700, height: 640, zoom: { q0, q1, k0, k1 }, overview });
  assert.deepEqual(built.meta, { layer: 1, head: 'mean', cells: 60 * 60, pool: 1, offset: q0, scale: 'log',
    koffset: k0, rows: 60, cols: 60, window: `${q0}-${q1}x${k0}-${k1}`, zoom: 1, minimap: 1 });
  const heat = built.option.series.find((s) => s.id === 'attention');
  for (const [x, y, , w] of heat.data) assert.equal(w, m[q0 + y][k0 + x]);
  assert.match(built.option.yAxis[0].data[0], /^120: w120$/);
  assert.equal(built.option.yAxis[0].data[10].value, '130: w130', 'the selected query is highlighted');
  const [main, mini] = built.option.grid;
  assert.equal(main.width, main.height, 'a square window keeps square cells');
  assert.equal(mini.width, 84);
  const rect = built.option.graphic.find((g) => g.id === 'minimap-window').shape;
  const scale = 84 / (side * b);
  assert.ok(Math.abs(rect.x - (mini.left + k0 * scale)) < 1e-9);
  assert.ok(Math.abs(rect.y - (mini.top + q0 * scale)) < 1e-9);
  assert.ok(Math.abs(rect.width - 60 * scale) < 1e-9);
  assert.equal(built.option.visualMap.length, 2, 'the mini-map has its own (hidden) colour map on the same scale');
  assert.equal(built.option.visualMap[1].show, false);
  assert.equal(built.option.visualMap[1].min, built.option.visualMap[0].min);
  const ovMax = Math.max(...overview.matrix.flat());
  assert.equal(built.option.visualMap[1].max, Math.log10(ovMax), 'up to the whole run\'s own max');
  assert.ok(built.caption.endsWith(t('attn.zoom', { q0: 120, q1: 179, k0: 40, k1: 99 })));
});

test('a rectangular zoom keeps square cells and draws only causal cells', () => {
  const n = 100;
  const m = causal(n);
  const data = { layer: 0, head: 2, num_tokens: n, q_start: 50, k_start: 10, block: 1,
    matrix: m.slice(50, 90).map((row) => row.slice(10, 30)), tokens: Array.from({ length: n }, (_, i) => `w${i}`) };
  const built = buildAttentionOption(data, { t, selected: null, scale: 'sqrt', width: 600, height: 600, zoom: { q0: 50, q1: 90, k0: 10, k1: 30 } });
  const g = built.option.grid;
  assert.ok(Math.abs(g.width / 20 - g.height / 40) < 0.05, 'cells are square');
  assert.equal(built.option.series[0].data.length, 40 * 20, 'every key is before every query here');
});

test('the lens shows a readable window of a long range: at most LENS_WINDOW columns, >= 12 px each', () => {
  assert.equal(lensVisibleColumns(10, 400), 10, 'short ranges are shown whole');
  assert.equal(lensVisibleColumns(1466, 400), 33);
  assert.equal(lensVisibleColumns(1466, 2000), LENS_WINDOW);
  assert.equal(lensVisibleColumns(1466, 100), 16, 'never fewer than 16');
  assert.equal(lensWindowStart(100, 20, null), 0);
  assert.equal(lensWindowStart(100, 20, 50), 40, 'centred on the selection');
  assert.equal(lensWindowStart(100, 20, 99), 80, 'clamped at the end');
  assert.equal(lensWindowStart(100, 20, 55, 45), 45, 'the window on show is kept while it holds the selection');
  assert.equal(lensWindowStart(100, 20, 90, 45), 80, 'and left when it does not');
});

function lensData(n, L) {
  const grid = (f) => Array.from({ length: L + 1 }, (_, l) => Array.from({ length: n }, (_, p) => f(l, p)));
  return {
    num_layers: L, num_tokens: n, num_prompt_tokens: n, tokens: Array.from({ length: n }, (_, i) => `w${i}`),
    chosen_prob: grid((l, p) => ((l + p) % 10) / 10), chosen_rank: grid(() => 1), entropy: grid(() => 1),
    top_ids: grid(() => [1]), top_probs: grid(() => [0.5]), texts: { 1: 'x' },
    first_top1: Array(n).fill(null), settled_top1: Array(n).fill(null), next_ids: Array(n).fill(1), mean_entropy: Array(L + 1).fill(1),
  };
}

test('buildLensOption scrolls a long range with a slider, and says so', () => {
  const built = buildLensOption(lensData(300, 4), { t, range: 'all', metric: 'prob', width: 800, height: 600, selected: 150 });
  assert.equal(built.meta.columns, 299);
  const visible = built.meta.visible;
  assert.ok(visible <= LENS_WINDOW && visible >= 16);
  const [slider, inside] = built.option.dataZoom;
  assert.equal(slider.type, 'slider');
  assert.equal(inside.type, 'inside');
  assert.equal(slider.endValue - slider.startValue + 1, visible);
  assert.ok(slider.startValue <= 150 && 150 <= slider.endValue, 'the selection is in the window');
  assert.equal(slider.zoomLock, true, 'the window keeps its width');
  assert.ok(built.caption.includes(t('lens.scrolled', { k: visible })));
  const short = buildLensOption(lensData(20, 4), { t, range: 'all', metric: 'prob', width: 800, height: 600 });
  assert.equal(short.option.dataZoom, undefined);
  assert.equal(short.meta.visible, undefined);
});

test('a long lens range asks first unless it is measured to be quick', () => {
  assert.equal(lensNeedsConfirm(LENS_CONFIRM_FROM, null), false);
  assert.equal(lensNeedsConfirm(LENS_CONFIRM_FROM + 1, null), true, 'not measured yet: ask');
  assert.equal(lensNeedsConfirm(1466, 0.1), true);
  assert.equal(lensNeedsConfirm(1466, 0.001), false, '1.5 s: just do it');
  const tt = (k, v) => ({ 'time.s': `${v.s} s`, 'time.min': `${v.m} min ${v.s} s` }[k]);
  assert.equal(fmtSeconds(44.6, tt), '45 s');
  assert.equal(fmtSeconds(152.4, tt), '2 min 32 s');
  assert.equal(fmtSeconds(0.2, tt), '1 s');
});

test('an off-scale point is labelled on the side facing the plot, its arrow pointing where it lies', () => {
  const win = { x: [0, 10], y: [0, 10] };
  assert.deepEqual(offScaleLabel({ name: 'a', rawX: -50, rawY: 5 }, win), { position: 'right', text: '← a' });
  assert.deepEqual(offScaleLabel({ name: 'a', rawX: 50, rawY: 5 }, win), { position: 'left', text: 'a →' });
  assert.deepEqual(offScaleLabel({ name: 'a', rawX: -50, rawY: 50 }, win), { position: 'right', text: '↖ a' });
  assert.deepEqual(offScaleLabel({ name: 'a', rawX: 5, rawY: 50 }, win), { position: 'bottom', text: '↑ a' });
  assert.deepEqual(offScaleLabel({ name: 'a', rawX: 5, rawY: -50 }, win), { position: 'top', text: '↓ a' });
  assert.deepEqual(offScaleLabel({ name: 'a', rawX: 50, rawY: -50 }, win), { position: 'left', text: 'a ↘' });
});

test('the export frame: title, wrapped caption and a line naming model, run and position, escaped', () => {
  assert.deepEqual(wrapText('aa bb cc dd', 5), ['aa bb', 'cc dd']);
  assert.deepEqual(wrapText('abcdefghij', 4), ['abcd', 'efgh', 'ij']);
  const s = { view: 'attention', model: { name: 'M<1>' }, run: { run_id: 'r1' }, selected: 7 };
  const frame = exportFrame(s, 'Layer 0 & "all"', t);
  assert.equal(frame.title, `llmvis · ${t('tab.attention')}`);
  assert.deepEqual(frame.lines, ['Layer 0 & "all"', t('export.meta', { model: 'M<1>', run: 'r1', pos: 7 })]);
  const svg = frameSVG('<?xml version="1.0"?><svg width="300" height="200" xmlns="http://www.w3.org/2000/svg"><rect/></svg>', 300, 200, frame);
  const lay = frameLayout(300, 200, frame);
  assert.ok(svg.startsWith(`<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="300" height="${lay.total}"`));
  assert.ok(svg.includes(`<svg x="0" y="${lay.top}" width="300"`), 'the chart is nested below the title band');
  assert.ok(!svg.includes('<?xml'), 'no declaration inside the document');
  assert.ok(svg.includes('Layer 0 &amp; &quot;all&quot;'));
  assert.ok(svg.includes('M&lt;1&gt;'));
  assert.ok(!svg.includes('M<1>'));
  assert.equal(lay.total, lay.top + 200 + lay.bottom);
});

test('attention by segment of a scored text: a message naming its segments', () => {
  const run = { tokens: [{ segment: 'user', source: 'prompt' }, { segment: 'user', source: 'prompt' }] };
  assert.equal(segmentsNothingToSplit(run, t), t('segments.nothingToSplit', { k: 1, names: t('tip.segment.user') }));
  const templated = { tokens: ['template', 'system', 'template', 'user'].map((segment) => ({ segment, source: 'prompt' })) };
  assert.equal(segmentsNothingToSplit(templated, t),
    t('segments.nothingToSplit', { k: 2, names: `${t('tip.segment.system')}, ${t('tip.segment.user')}` }));
});
