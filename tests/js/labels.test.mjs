// Axis labels of the heatmaps: thinning always keeps the selected label, and the highlight is
// on the selected category itself (issue 13, defect 5: position 20 selected lit up "100: ...").
import test from 'node:test';
import assert from 'node:assert/strict';

import { highlightCategory, labelPicker } from '../../llmvis/web/static/js/charts.js';
import { buildAttentionOption } from '../../llmvis/web/static/js/views/attention.js';

const t = (key, params) => (params ? `${key}${JSON.stringify(params)}` : key);

test('labelPicker shows every label when they fit', () => {
  const pick = labelPicker(10, 20, 3);
  assert.deepEqual([...Array(10).keys()].filter(pick), [...Array(10).keys()]);
});

test('labelPicker thins to every step-th label, keeps the selected one, hides its close neighbours', () => {
  const n = 342;
  for (const sel of [0, 7, 20, 100, 171, 341]) {
    const pick = labelPicker(n, 40, sel);
    const shown = [...Array(n).keys()].filter(pick);
    assert.ok(shown.includes(sel), `selected ${sel} is shown`);
    assert.ok(shown.length <= 41, 'at most about maxLabels labels');
    const step = Math.ceil(n / 40);
    for (const i of shown) if (i !== sel) assert.ok(Math.abs(i - sel) >= step, `${i} is not crowding ${sel}`);
  }
  const none = [...Array(n).keys()].filter(labelPicker(n, 40, null));
  assert.equal(none[1] - none[0], Math.ceil(n / 40));
});

test('labelPicker ignores a selection outside the axis', () => {
  const pick = labelPicker(100, 10, 500);
  assert.equal([...Array(100).keys()].filter(pick).length, 10);
});

test('highlightCategory styles exactly the selected category', () => {
  const out = highlightCategory(['a', 'b', 'c'], 2, { color: 'red' });
  assert.deepEqual(out, ['a', 'b', { value: 'c', textStyle: { color: 'red' } }]);
  assert.deepEqual(highlightCategory(['a', 'b'], null), ['a', 'b']);
});

test('attention on a long run: the selected row is the one labelled and highlighted', () => {
  const n = 342;
  const matrix = Array.from({ length: n }, (_, i) => Array.from({ length: i + 1 }, () => 1 / (i + 1)));
  const tokens = Array.from({ length: n }, (_, i) => `w${i}`);
  const built = buildAttentionOption({ layer: 0, head: 'mean', num_tokens: n, matrix, tokens },
    { t, selected: 20, scale: 'sqrt', width: 560, height: 560 });
  const { xAxis, yAxis } = built.option;
  for (const axis of [xAxis, yAxis]) {
    const lit = axis.data.map((d, i) => [d, i]).filter(([d]) => typeof d === 'object');
    assert.equal(lit.length, 1, 'one highlighted label');
    const [[item, idx]] = lit;
    assert.equal(idx, 10, 'pooled by 2: position 20 is row 10');
    assert.match(item.value, /^20: w20$/);
    assert.equal(axis.axisLabel.interval(idx), true, 'and it is drawn');
    assert.notEqual(typeof axis.axisLabel.color, 'function', 'no colour callback (it gets the drawn index)');
  }
});

test('the automatic colour scale is √ on short runs and log on long ones, and the caption names it', async () => {
  const { resolveScale, LOG_SCALE_FROM } = await import('../../llmvis/web/static/js/views/attention.js');
  assert.equal(resolveScale('auto', 40), 'sqrt');
  assert.equal(resolveScale('auto', LOG_SCALE_FROM + 1), 'log');
  assert.equal(resolveScale('linear', 1000), 'linear');
  assert.equal(resolveScale('nonsense', 10), 'sqrt');
  const n = 300;
  const matrix = Array.from({ length: n }, (_, i) => Array.from({ length: i + 1 }, () => 1 / (i + 1)));
  const built = buildAttentionOption({ layer: 0, head: 'mean', num_tokens: n, matrix, tokens: matrix.map((_, i) => `w${i}`) },
    { t, selected: null, scale: 'auto' });
  assert.equal(built.meta.scale, 'log');
  assert.ok(built.caption.includes(t('attn.scale', { scale: 'scale.log' })));
  assert.equal(built.option.visualMap.min, -4, 'log10 of 1e-4');
});

test('newJobId: 16 hex digits, as the server wants (8 to 32)', async () => {
  const { newJobId } = await import('../../llmvis/web/static/js/insights.js');
  assert.match(newJobId(), /^[0-9a-f]{16}$/);
  assert.equal(newJobId(() => 0.999), 'f'.repeat(16));
});

test('chip text is dark or light, whichever keeps WCAG AA contrast on the chip colour', async () => {
  const { chipTextOn, contrastRatio } = await import('../../llmvis/web/static/js/conversation.js');
  const { CHIP_MAP, sampleMap, mixHex } = await import('../../llmvis/web/static/js/colors.js');
  for (let i = 0; i <= 100; i += 1) {
    const pure = sampleMap(CHIP_MAP, i / 100);
    for (const bg of [pure, mixHex(pure, '#161b22', 0.45)]) {
      assert.ok(contrastRatio(chipTextOn(bg), bg) >= 4.5, `${bg}: ${contrastRatio(chipTextOn(bg), bg)}`);
    }
  }
  assert.ok(Math.abs(contrastRatio('#000000', '#ffffff') - 21) < 1e-9);
});
