import assert from 'node:assert/strict';
import { test } from 'node:test';

import { FEATURE_KEYS, checkFeature, createRegistry } from '../../llmvis/web/static/js/registry.js';

const feature = (name, extra = {}) => ({ name, ...extra });

test('the one feature shape: name, loaders, watch, click, export detail and three hooks', () => {
  assert.deepEqual([...FEATURE_KEYS], [
    'name', 'loaders', 'watch', 'onChartClick', 'exportDetail', 'onModel', 'onRun', 'onLanguage',
  ]);
});

test('checkFeature refuses anything off the shape, naming the problem', () => {
  assert.throws(() => checkFeature(null), /must be an object/);
  assert.throws(() => checkFeature({}), /needs a name/);
  assert.throws(() => checkFeature({ name: 'x', refresh() {} }), /feature x: unknown key "refresh"/);
  assert.throws(() => checkFeature({ name: 'x', onRun: 3 }), /onRun must be a function/);
  assert.throws(() => checkFeature({ name: 'x', loaders: { a: 'no' } }), /loader a must be a function/);
  assert.throws(() => checkFeature({ name: 'x', watch: 'run' }), /watch must be an array/);
  const ok = { name: 'ok', loaders: { v: async () => ({}) }, watch: ['run'], onRun() {} };
  assert.equal(checkFeature(ok), ok);
});

test('views come in registration order; a view or a name may be registered once', () => {
  const reg = createRegistry();
  reg.register(feature('core', { loaders: { attention: async () => 1, probs: async () => 2 } }));
  reg.register(feature('more', { loaders: { lens: async () => 3 } }));
  reg.register(feature('hooks-only'));
  assert.deepEqual(reg.views(), ['attention', 'probs', 'lens']);
  assert.deepEqual(reg.names(), ['core', 'more', 'hooks-only']);
  assert.equal(reg.has('lens'), true);
  assert.equal(reg.has('diff'), false);
  assert.throws(() => reg.register(feature('other', { loaders: { probs: async () => 0 } })), /view probs is registered twice/);
  assert.throws(() => reg.register(feature('core')), /feature core is registered twice/);
  assert.deepEqual(reg.views(), ['attention', 'probs', 'lens'], 'a refused feature adds nothing');
});

test('load runs the view\'s loader with the run and the context, and rejects an unknown view', async () => {
  const reg = createRegistry();
  reg.register(feature('f', { loaders: { v: async (run, ctx) => ({ caption: `${run.run_id}@${ctx.selected}` }) } }));
  assert.deepEqual(await reg.load('v', { run_id: 'ab' }, { selected: 4 }), { caption: 'ab@4' });
  await assert.rejects(reg.load('nope', {}, {}), /no view named nope/);
});

test('watched is the union of every feature\'s store keys', () => {
  const reg = createRegistry();
  reg.register(feature('a', { watch: ['run', 'view'] }));
  reg.register(feature('b', { watch: ['view', 'lensMetric'] }));
  reg.register(feature('c'));
  assert.deepEqual([...reg.watched()].sort(), ['lensMetric', 'run', 'view']);
});

test('a chart click goes to each feature in turn until one handles it', () => {
  const reg = createRegistry();
  const seen = [];
  reg.register(feature('a', { onChartClick: (p) => { seen.push(`a:${p.seriesId}`); return p.seriesId === 'lens'; } }));
  reg.register(feature('b'));
  reg.register(feature('c', { onChartClick: (p, shown, ctx) => { seen.push(`c:${shown.view}`); ctx.select(7); return true; } }));
  reg.register(feature('d', { onChartClick: () => { seen.push('d'); return true; } }));
  let selected = null;
  const ctx = { select: (p) => { selected = p; } };
  assert.equal(reg.click({ seriesId: 'lens' }, { view: 'lens' }, ctx), true);
  assert.deepEqual(seen, ['a:lens']);
  seen.length = 0;
  assert.equal(reg.click({ seriesId: 'bar' }, { view: 'probs' }, ctx), true);
  assert.deepEqual(seen, ['a:bar', 'c:probs'], 'd is not asked once c handled it');
  assert.equal(selected, 7);
  const none = createRegistry();
  none.register(feature('x', { onChartClick: () => false }));
  assert.equal(none.click({}, { view: 'v' }, ctx), false);
});

test('exportDetail is the first answer that is not undefined or null', () => {
  const reg = createRegistry();
  reg.register(feature('a', { exportDetail: (view) => ({ attention: 'L3-mean' }[view]) }));
  reg.register(feature('b', { exportDetail: () => null }));
  reg.register(feature('c', { exportDetail: (view, s) => (view === 'lens' ? `${s.lensMetric}-all` : undefined) }));
  assert.equal(reg.exportDetail('attention', {}), 'L3-mean');
  assert.equal(reg.exportDetail('lens', { lensMetric: 'rank' }), 'rank-all');
  assert.equal(reg.exportDetail('diff', {}), undefined);
});

test('emit calls one hook on every feature that has it, in order, and knows only the three hooks', () => {
  const reg = createRegistry();
  const calls = [];
  reg.register(feature('a', { onRun: (run) => calls.push(`a:${run.run_id}`), onLanguage: () => calls.push('a:lang') }));
  reg.register(feature('b', { onModel: (m) => calls.push(`b:${m.name}`) }));
  reg.register(feature('c', { onRun: (run) => calls.push(`c:${run.run_id}`) }));
  reg.emit('onRun', { run_id: 'r1' });
  reg.emit('onModel', { name: 'tiny' });
  reg.emit('onLanguage');
  assert.deepEqual(calls, ['a:r1', 'c:r1', 'b:tiny', 'a:lang']);
  assert.throws(() => reg.emit('onClick'), /no hook named onClick/);
});
