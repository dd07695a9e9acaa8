// The all-heads overview's pure parts: float16 decoding (against bit patterns worked out by
// hand from IEEE 754), one thumbnail's pixels, the export picture's layout.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ATTENTION_MAP, sampleMap } from '../../llmvis/web/static/js/colors.js';
import {
  POOL, colourTable, compositeLayout, decodeHeads, exportOption, halfToFloat, overviewCaption, thumbnailPixels,
} from '../../llmvis/web/static/js/views/overview.js';
import { t } from './helpers.mjs';

test('halfToFloat decodes IEEE 754 half precision', () => {
  const cases = [
    [0x0000, 0], [0x3c00, 1], [0xbc00, -1], [0x4000, 2], [0x3800, 0.5], [0x3400, 0.25],
    [0x3555, 0.333251953125], // 1 + 0x155/1024 = 1.3330078125, times 2^-2
    [0x7bff, 65504], // the largest finite half
    [0x0400, 2 ** -14], // the smallest normal
    [0x0001, 2 ** -24], // the smallest subnormal
    [0x03ff, (1023 / 1024) * 2 ** -14], // the largest subnormal
  ];
  for (const [bits, want] of cases) assert.equal(halfToFloat(bits), want, bits.toString(16));
  assert.equal(halfToFloat(0x7c00), Infinity);
  assert.equal(halfToFloat(0xfc00), -Infinity);
  assert.ok(Number.isNaN(halfToFloat(0x7e00)));
});

test('decodeHeads splits head after head, rows of cols, and checks the length', () => {
  const bits = new Uint16Array([0x3c00, 0x0000, 0x3800, 0x3800, 0x3400, 0x0000, 0x3c00, 0x3c00]);
  const heads = decodeHeads(bits.buffer, 2, 2, 2);
  assert.deepEqual([...heads[0]], [1, 0, 0.5, 0.5]);
  assert.deepEqual([...heads[1]], [0.25, 0, 1, 1]);
  assert.throws(() => decodeHeads(bits.buffer, 3, 2, 2), /expected 3×2×2/);
});

test('a thumbnail: the colour of each causal cell, scaled to the head\'s own max; the panel colour above the diagonal', () => {
  const lut = colourTable();
  assert.equal(lut.length, 768);
  const hex = (i) => `#${[0, 1, 2].map((k) => lut[i * 3 + k].toString(16).padStart(2, '0')).join('')}`;
  assert.equal(hex(0), sampleMap(ATTENTION_MAP, 0));
  assert.equal(hex(255), sampleMap(ATTENTION_MAP, 1));
  const m = new Float32Array([0.5, 0, 0.125, 0.5]); // 2 x 2, max 0.5
  const { pixels, max } = thumbnailPixels(m, 2, 2, 'sqrt', lut);
  assert.equal(max, 0.5);
  const px = (i) => [...pixels.slice(i * 4, i * 4 + 3)];
  assert.deepEqual(px(0), [...lut.slice(255 * 3, 255 * 3 + 3)], 'the max is the top of the map');
  assert.deepEqual(px(1), [0x16, 0x1b, 0x22], 'above the diagonal: the panel colour');
  // sqrt(0.125) / sqrt(0.5) = 0.5 of the way up the map
  assert.deepEqual(px(2), [...lut.slice(128 * 3, 128 * 3 + 3)]);
  // log: three decades below the head's max map onto the whole range
  const log = thumbnailPixels(new Float32Array([1, 0, 0.001, 0.0316227766]), 2, 2, 'log', lut);
  const at = (p, i) => [...p.slice(i * 4, i * 4 + 3)];
  assert.deepEqual(at(log.pixels, 2), [...lut.slice(0, 3)]);
  const half = JSON.stringify(at(log.pixels, 3)); // 10^-1.5 is half way (float32: index 127 or 128)
  assert.ok([127, 128].some((i) => JSON.stringify([...lut.slice(i * 3, i * 3 + 3)]) === half), half);
  assert.ok(pixels.every((v, i) => i % 4 !== 3 || v === 255), 'opaque');
});

test('the export picture lays out layers × heads and names them', () => {
  const lay = compositeLayout(30, 9);
  assert.equal(lay.cell, POOL);
  assert.deepEqual([lay.cw, lay.ch], [9 * 34, 30 * 34]);
  assert.deepEqual(lay.at(2, 3), [3 * 34, 2 * 34]);
  const opt = exportOption('data:image/png;base64,AA', lay.cw, lay.ch, { width: 600, height: 700, layers: 30, heads: 9, cell: 32, gap: 2, t });
  const image = opt.graphic.find((g) => g.type === 'image');
  assert.ok(image.style.height <= 700 - 28 - 16 + 1e-9, 'fits the chart');
  assert.ok(Math.abs(image.style.width / image.style.height - lay.cw / lay.ch) < 1e-9, 'keeps its aspect');
  const texts = opt.graphic.filter((g) => g.type === 'text').map((g) => g.style.text);
  assert.ok(texts.includes('L0') && texts.includes('H0'));
  assert.equal(exportOption(null, lay.cw, lay.ch, { width: 600, height: 700, layers: 30, heads: 9, cell: 32, gap: 2, t })
    .graphic.some((g) => g.type === 'image'), false, 'nothing drawn yet: no picture');
  assert.equal(overviewCaption(t, { layers: 30, heads: 9, n: 1024, block: 32, scaleName: 'log' }),
    t('overview.caption', { layers: 30, heads: 9, n: 1024, pool: 32, block: 32, scale: 'scale.log' }));
});
