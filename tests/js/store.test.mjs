import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createStore, touched } from '../../llmvis/web/static/js/store.js';
import { initialState } from '../../llmvis/web/static/js/state.js';

test('get returns a copy of the initial state', () => {
  const init = { a: 1, b: 'x' };
  const store = createStore(init);
  assert.deepEqual(store.get(), { a: 1, b: 'x' });
  assert.notEqual(store.get(), init);
  init.a = 99;
  assert.equal(store.get().a, 1, 'later changes to the initial object do not leak in');
});

test('set merges shallowly, keeps the other keys and returns the changed keys', () => {
  const nested = { deep: 1 };
  const store = createStore({ a: 1, b: nested, c: 3 });
  const before = store.get();
  assert.deepEqual(store.set({ a: 2, c: 3 }), ['a']);
  assert.deepEqual(store.get(), { a: 2, b: nested, c: 3 });
  assert.equal(store.get().b, nested, 'shallow: the nested object is the same object');
  assert.notEqual(store.get(), before, 'a change gives a new state object');
  assert.equal(before.a, 1, 'the old state object is left as it was');
});

test('subscribers hear (state, prev, changed keys) once per change, and not for no-ops', () => {
  const store = createStore({ a: 1, b: 2 });
  const calls = [];
  store.subscribe((s, prev, changed) => calls.push([s.a, s.b, prev.a, [...changed].sort()]));
  store.set({ a: 5, b: 6 });
  store.set({ a: 5 }); // unchanged: nobody is told
  store.set({});
  store.set(null);
  assert.deepEqual(calls, [[5, 6, 1, ['a', 'b']]]);
});

test('set accepts a function of the current state', () => {
  const store = createStore({ n: 2 });
  store.set((s) => ({ n: s.n * 10 }));
  assert.equal(store.get().n, 20);
});

test('a new key counts as a change, even when undefined', () => {
  const store = createStore({});
  assert.deepEqual(store.set({ x: undefined }), ['x']);
  assert.ok('x' in store.get());
});

test('NaN is equal to itself (Object.is), so setting it again is a no-op', () => {
  const store = createStore({ v: NaN });
  assert.deepEqual(store.set({ v: NaN }), []);
});

test('unsubscribe stops the notifications', () => {
  const store = createStore({ a: 0 });
  let n = 0;
  const off = store.subscribe(() => { n += 1; });
  store.set({ a: 1 });
  off();
  store.set({ a: 2 });
  assert.equal(n, 1);
});

test('a set made by a subscriber is seen at once and announced after the current round, in order', () => {
  const store = createStore({ a: 0, b: 0 });
  const log = [];
  store.subscribe((s, prev, changed) => {
    log.push(`first:${[...changed].join()}:${s.a},${s.b}`);
    if (changed.has('a')) {
      store.set({ b: s.a * 2 });
      log.push(`first sees b=${store.get().b}`);
    }
  });
  store.subscribe((s, prev, changed) => log.push(`second:${[...changed].join()}:${s.a},${s.b}`));
  store.set({ a: 3 });
  assert.deepEqual(log, [
    'first:a:3,0',
    'first sees b=6',
    'second:a:3,0', // the second subscriber still gets the first change first
    'first:b:3,6',
    'second:b:3,6',
  ]);
});

test('a subscriber that unsubscribes another during a round stops it from being called', () => {
  const store = createStore({ a: 0 });
  const seen = [];
  let offB = null;
  store.subscribe(() => { seen.push('A'); offB(); });
  offB = store.subscribe(() => seen.push('B'));
  store.set({ a: 1 });
  assert.deepEqual(seen, ['A']);
});

test('touched tells whether any of the keys changed', () => {
  const changed = new Set(['run', 'selected']);
  assert.equal(touched(changed, 'view', 'run'), true);
  assert.equal(touched(changed, 'view'), false);
  assert.equal(touched(changed), false);
});

test('the page state starts with no run, the attention view and the page defaults', () => {
  const s = initialState();
  assert.equal(s.run, null);
  assert.equal(s.model, null);
  assert.equal(s.busy, null);
  assert.equal(s.view, 'attention');
  assert.equal(s.head, 'mean');
  assert.equal(s.scale, 'auto');
  assert.equal(s.topN, 20);
  assert.equal(s.metric, 'prob');
  assert.equal(s.mode, 'generate');
  assert.ok(s.sessionRuns instanceof Map && s.sessionRuns.size === 0);
  assert.notEqual(initialState().sessionRuns, s.sessionRuns, 'each call starts afresh');
});
