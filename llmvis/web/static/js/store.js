// The page's one state store. Every piece of page state (the model, the run on show, the
// selection, the view and its settings, the busy flag, the form's sampling settings...) lives in
// one plain object here. Modules change it only with set(patch) and learn of changes only by
// subscribing; nothing is passed around through DOM attributes or synthetic events.

/**
 * Create a store holding `initial` (copied). Returns {get, set, subscribe}.
 *  - get(): the current state object (treat it as read-only; a new object after every change).
 *  - set(patch): shallow-merge `patch` (an object, or a function state -> object) into the state.
 *    Keys whose value is unchanged (Object.is) are ignored; when nothing changed no one is told.
 *    Returns the list of changed keys.
 *  - subscribe(fn): fn(state, prev, changed) after every change, where `changed` is a Set of
 *    keys. Returns an unsubscribe function.
 * A set() made by a subscriber while others are still being told is applied at once (get() sees
 * it) but announced after the current round, so every subscriber sees changes in order. Pure
 * (no DOM).
 */
export function createStore(initial = {}) {
  let state = { ...initial };
  const subscribers = new Set();
  const queue = [];
  let notifying = false;

  const get = () => state;

  const set = (patch) => {
    const p = typeof patch === 'function' ? patch(state) : patch;
    if (!p || typeof p !== 'object') return [];
    const changed = Object.keys(p).filter((k) => !(k in state) || !Object.is(state[k], p[k]));
    if (!changed.length) return [];
    const prev = state;
    state = { ...state };
    for (const k of changed) state[k] = p[k];
    queue.push([state, prev, new Set(changed)]);
    if (!notifying) {
      notifying = true;
      try {
        while (queue.length) {
          const [next, before, keys] = queue.shift();
          for (const fn of [...subscribers]) {
            if (subscribers.has(fn)) fn(next, before, keys);
          }
        }
      } finally {
        notifying = false;
        queue.length = 0;
      }
    }
    return changed;
  };

  const subscribe = (fn) => {
    subscribers.add(fn);
    return () => { subscribers.delete(fn); };
  };

  return { get, set, subscribe };
}

/** Did any of `keys` change? For subscribers: `if (touched(changed, 'run', 'view')) ...`. Pure. */
export function touched(changed, ...keys) {
  return keys.some((k) => changed.has(k));
}
