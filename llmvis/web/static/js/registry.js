// The registry of views and features. The core views (core.js), the layer views (insights.js),
// interactive generation (interactive.js) and the history (keep.js) each register ONE object of
// the same shape; main.js only ever iterates the registry, it knows no feature by name.
//
// Feature shape (every field optional except name):
//   name            a unique name
//   loaders         {view: async (run, ctx) => built}: what a view draws. ctx: {t, state,
//                   selected, labels, longLabels, width, height}; built: {option, caption, meta}
//                   or {message}
//   watch           store keys whose change redraws the chart
//   onChartClick    (p, shown, ctx) => true when handled. p: an ECharts click (or
//                   {source: 'canvas', point} for a click on the empty canvas); shown: {view, meta}
//                   of what is drawn; ctx: {select(pos), gridCoord(point)}
//   exportDetail    (view, state) => the file-name detail for a saved chart, or undefined
//   onModel         (model) => void, once the model info is known
//   onRun           (run) => void, whenever a run is put on show
//   onLanguage      () => void, after the language changed (and once at start)

export const FEATURE_KEYS = Object.freeze([
  'name', 'loaders', 'watch', 'onChartClick', 'exportDetail', 'onModel', 'onRun', 'onLanguage',
]);
export const HOOKS = Object.freeze(['onModel', 'onRun', 'onLanguage']);

/** Check a feature object against the one shape; throws a TypeError naming what is wrong. Pure. */
export function checkFeature(feature) {
  if (!feature || typeof feature !== 'object') throw new TypeError('a feature must be an object');
  if (typeof feature.name !== 'string' || !feature.name) throw new TypeError('a feature needs a name');
  for (const key of Object.keys(feature)) {
    if (!FEATURE_KEYS.includes(key)) throw new TypeError(`feature ${feature.name}: unknown key "${key}"`);
  }
  for (const key of [...HOOKS, 'onChartClick', 'exportDetail']) {
    if (feature[key] !== undefined && typeof feature[key] !== 'function') {
      throw new TypeError(`feature ${feature.name}: ${key} must be a function`);
    }
  }
  for (const [view, load] of Object.entries(feature.loaders || {})) {
    if (typeof load !== 'function') throw new TypeError(`feature ${feature.name}: loader ${view} must be a function`);
  }
  if (feature.watch !== undefined && !Array.isArray(feature.watch)) {
    throw new TypeError(`feature ${feature.name}: watch must be an array of store keys`);
  }
  return feature;
}

/** Create an empty registry. Pure (no DOM). */
export function createRegistry() {
  const features = [];
  const loaders = new Map(); // view -> loader

  return {
    /** Add a feature (checked against the shape); a view may be registered only once. */
    register(feature) {
      checkFeature(feature);
      if (features.some((f) => f.name === feature.name)) throw new Error(`feature ${feature.name} is registered twice`);
      for (const view of Object.keys(feature.loaders || {})) {
        if (loaders.has(view)) throw new Error(`view ${view} is registered twice`);
      }
      for (const [view, load] of Object.entries(feature.loaders || {})) loaders.set(view, load);
      features.push(feature);
      return feature;
    },
    /** Names of the registered features, in registration order. */
    names: () => features.map((f) => f.name),
    /** Every registered view, in registration order. */
    views: () => [...loaders.keys()],
    has: (view) => loaders.has(view),
    /** Run the loader of `view`. Rejects for an unknown view. */
    async load(view, run, ctx) {
      const load = loaders.get(view);
      if (!load) throw new Error(`no view named ${view}`);
      return load(run, ctx);
    },
    /** Every store key that some feature redraws the chart on. */
    watched: () => new Set(features.flatMap((f) => f.watch || [])),
    /** Offer a chart click to each feature in turn; true once one handled it. */
    click(p, shown, ctx) {
      return features.some((f) => Boolean(f.onChartClick?.(p, shown, ctx)));
    },
    /** The first feature's export detail for `view` (undefined when none knows the view). */
    exportDetail(view, state) {
      for (const f of features) {
        const d = f.exportDetail?.(view, state);
        if (d !== undefined && d !== null) return d;
      }
      return undefined;
    },
    /** Call one hook (onModel, onRun, onLanguage) on every feature that has it, in order. */
    emit(hook, ...args) {
      if (!HOOKS.includes(hook)) throw new Error(`no hook named ${hook}`);
      for (const f of features) f[hook]?.(...args);
    },
  };
}
