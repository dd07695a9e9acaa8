import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  CHIP_MAP, GLTR_BUCKETS, MAGMA, cssGradient, gltrBucket, gltrGradient, hexToRgb, luminance, metricDomain,
  metricT, mixHex, rgbToHex, sampleMap, sliceMap, textOn,
} from '../../llmvis/web/static/js/colors.js';

test('hex and RGB convert both ways, rounding channels', () => {
  assert.deepEqual(hexToRgb('#ff8000'), [255, 128, 0]);
  assert.equal(rgbToHex([255, 128, 0]), '#ff8000');
  assert.equal(rgbToHex([0.4, 254.6, 16]), '#00ff10');
});

test('sampleMap interpolates between stops and clamps t to [0, 1]', () => {
  const bw = ['#000000', '#ffffff'];
  assert.equal(sampleMap(bw, 0), '#000000');
  assert.equal(sampleMap(bw, 0.5), '#808080'); // 127.5 rounds to 128
  assert.equal(sampleMap(bw, 1), '#ffffff');
  assert.equal(sampleMap(bw, 2), '#ffffff');
  assert.equal(sampleMap(bw, -1), '#000000');
  assert.equal(sampleMap(bw, NaN), '#000000');
  const three = ['#000000', '#ff0000', '#ffffff'];
  assert.equal(sampleMap(three, 0.25), '#800000');
  assert.equal(sampleMap(three, 0.75), '#ff8080');
});

test('sliceMap resamples part of a map', () => {
  assert.deepEqual(sliceMap(['#000000', '#ffffff'], 0, 1, 3), ['#000000', '#808080', '#ffffff']);
  assert.deepEqual(sliceMap(['#000000', '#ffffff'], 0.5, 1, 2), ['#808080', '#ffffff']);
});

test('the chip map is magma from 0.16 to 0.97 in nine stops', () => {
  assert.equal(CHIP_MAP.length, 9);
  // 0.16 of the way along 10 stops: 44% from #180f3d to #440f76
  assert.equal(CHIP_MAP[0], '#2b0f56');
  assert.equal(CHIP_MAP[8], sampleMap(MAGMA, 0.97));
});

test('mixHex mixes two colours', () => {
  assert.equal(mixHex('#000000', '#ffffff', 0.25), '#404040');
  assert.equal(mixHex('#102030', '#102030', 0.7), '#102030');
});

test('luminance and readable text colour', () => {
  assert.equal(luminance('#ffffff'), 1);
  assert.equal(luminance('#000000'), 0);
  assert.ok(Math.abs(luminance('#ff0000') - 0.2126) < 1e-12);
  assert.equal(textOn('#ffffff'), '#14161a');
  assert.equal(textOn('#000000'), '#f3f4f7');
});

test('gradients for the legend bar', () => {
  assert.equal(cssGradient(['#000', '#fff']), 'linear-gradient(to right, #000, #fff)');
  assert.equal(cssGradient(['#000', '#fff'], 'to top'), 'linear-gradient(to top, #000, #fff)');
  assert.equal(gltrGradient(),
    'linear-gradient(to right, #adff80 0% 25%, #ffea80 25% 50%, #ff9280 50% 75%, #e5b0ff 75% 100%)');
});

test('GLTR buckets: top 10, 100, 1000, beyond', () => {
  assert.deepEqual(GLTR_BUCKETS.map((b) => b.key), ['top10', 'top100', 'top1000', 'beyond']);
  assert.deepEqual([1, 10, 11, 100, 101, 1000, 1001, 50000].map(gltrBucket), [0, 0, 1, 1, 2, 2, 3, 3]);
  assert.equal(gltrBucket(null), null);
  assert.equal(gltrBucket(NaN), null);
});

test('metricT maps each metric to [0, 1], 1 being the surprising end', () => {
  const domain = { entropyMax: 3, rankMax: 1000 };
  assert.equal(metricT({ prob: 0.25 }, 'prob', domain), 0.75);
  assert.equal(metricT({ prob: null }, 'prob', domain), null);
  assert.equal(metricT({ entropy: 1.5 }, 'entropy', domain), 0.5);
  assert.equal(metricT({ entropy: 5 }, 'entropy', domain), 1);
  assert.ok(Math.abs(metricT({ rank: 100 }, 'rank', domain) - 2 / 3) < 1e-12);
  assert.equal(metricT({ rank: 1 }, 'rank', domain), 0);
  assert.equal(metricT({ rank: 50 }, 'gltr', domain), 1 / 3);
  assert.equal(metricT({ rank: 5000 }, 'gltr', domain), 1);
  assert.equal(metricT({ rank: null }, 'gltr', domain), null);
  assert.equal(metricT({ prob: 0.5 }, 'colour', domain), null);
});

test('metricDomain rounds entropy up and rank up to a power of ten', () => {
  assert.deepEqual(metricDomain([
    { entropy: 2.3, rank: 150 }, { entropy: null, rank: null }, { entropy: 0.4, rank: 3 },
  ]), { entropyMax: 3, rankMax: 1000 });
  assert.deepEqual(metricDomain([]), { entropyMax: 1, rankMax: 10 });
  assert.deepEqual(metricDomain([{ entropy: 0.2, rank: 5 }]), { entropyMax: 1, rankMax: 10 });
  assert.deepEqual(metricDomain([{ entropy: 4, rank: 1000 }]), { entropyMax: 4, rankMax: 1000 });
});
