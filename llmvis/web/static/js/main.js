// Entry point. Creates the one store (store.js, holding state.js's initialState) and the
// registry (registry.js), registers every feature with the same page context, and draws what
// belongs to no single feature: the conversation, the selection bar, the legend, the tabs and
// the chart. It knows no feature by name: views, clicks, export names and the run, model and
// language hooks all go through the registry. Nothing is put on window.

import { createApi } from './api.js';
import { PALETTE, createChartHost, download } from './charts.js';
import { createControls } from './controls.js';
import { createConversation } from './conversation.js';
import { createCoreViews } from './core.js';
import { createEstimate } from './estimate.js';
import { createExplain } from './explain.js';
import { exportFrame, framePNG } from './exportframe.js';
import { createI18n } from './i18n.js';
import { createInsights } from './insights.js';
import { createInteractive } from './interactive.js';
import { createIntervene } from './intervene.js';
import { createKeeper } from './keep.js';
import { createOverview } from './overview.js';
import { createRegistry } from './registry.js';
import { runSummaryText } from './score.js';
import { initialState } from './state.js';
import { createStore, touched } from './store.js';
import { fmtNum, fmtProb, tokenLabels } from './tokens.js';
import { el } from './util.js';

// Feature factories, in registration order: it is the order of the tabs for the arrow keys.
const FEATURES = [createControls, createEstimate, createCoreViews, createInsights, createOverview, createInteractive, createKeeper, createExplain, createIntervene];

/** Is the keyboard focus somewhere that wants arrow keys for itself? */
function focusWantsArrows(target) {
  if (!target || typeof target.closest !== 'function') return false;
  return Boolean(target.closest('input, textarea, select, [contenteditable=""], [contenteditable="true"]'));
}

function boot() {
  const doc = document;
  const win = window;
  const $ = (id) => doc.getElementById(id);
  const i18n = createI18n(win);
  const { t } = i18n;
  const api = createApi({ base: '.' }); // relative URLs: the page works under any path prefix (--base-url)
  const store = createStore(initialState());
  const registry = createRegistry();
  const convEl = $('conversation');

  const echarts = globalThis.echarts;
  const host = echarts ? createChartHost($('chart'), {
    echarts,
    overlay: $('chart-overlay'),
    overlayText: $('chart-overlay-text'),
  }) : null;

  // ---------- actions (the only ways a feature changes what is on show) ----------
  const showError = (message) => { store.set({ error: message }); };
  const clearError = () => { store.set({ error: '' }); };

  /** Select a position of the run on show (clamped); scroll: bring its chip into view. */
  function select(pos, { scroll = true } = {}) {
    const { run, selected } = store.get();
    if (!run) return;
    const p = Math.max(0, Math.min(run.tokens.length - 1, pos));
    if (p === selected) return;
    store.set({ selected: p, scrollToSelected: scroll });
  }

  /** Put a finished run on show. opts.select: the position to select (else the first generated). */
  function showRun(run, opts = {}) {
    api.clearCache();
    const n = run.tokens.length;
    const firstGen = run.tokens.findIndex((x) => x.source === 'generated');
    const want = opts.select ?? (firstGen >= 0 ? firstGen : n - 1);
    const patch = {
      run,
      labels: { short: tokenLabels(run.tokens, 12), long: tokenLabels(run.tokens, 32) },
      selected: Math.max(0, Math.min(n - 1, want)),
      scrollToSelected: opts.select != null,
      lastSeed: run.kind === 'score' ? null : (run.params?.seed ?? null),
    };
    if (run.model && !store.get().model) {
      Object.assign(patch, { model: run.model, projLayer: Math.round(run.model.num_layers / 2) });
    }
    store.set(patch);
  }

  const conversation = createConversation(convEl, {
    tooltip: $('token-tooltip'),
    i18n,
    onSelect: (pos) => select(pos),
  });

  // Every feature gets the same page context and returns the same shape (registry.js).
  const page = {
    doc, win, api, i18n, t, store, conversation, echarts,
    chart: () => host?.chart ?? null,
    select, showRun, showError, clearError,
  };
  for (const create of FEATURES) registry.register(create(page));
  if (!echarts) showError(t('err.noEcharts'));

  // ---------- small renderers ----------
  const renderLegend = () => {
    const lg = conversation.legend();
    $('legend-bar').style.background = lg.gradient;
    $('legend-lo').textContent = lg.lo;
    $('legend-hi').textContent = lg.hi;
  };

  const renderSelectionBar = () => {
    const bar = $('selection-bar');
    const { run, selected } = store.get();
    bar.replaceChildren();
    const tok = run && selected != null ? run.tokens[selected] : null;
    if (!tok) {
      bar.append(el(doc, 'span', 'sel-empty', t('sel.none')));
      return;
    }
    bar.append(
      el(doc, 'span', 'sel-pos', t('sel.position', { pos: tok.position })),
      el(doc, 'span', 'sel-tok', conversation.visibleTokenText(tok.position)),
      el(doc, 'span', `sel-src ${tok.source}`, t(`tip.source.${tok.source}`)),
    );
    const stat = (label, value) => {
      const s = el(doc, 'span', 'sel-stat');
      s.append(el(doc, 'span', 'k', label), ` ${value}`);
      bar.append(s);
    };
    if (tok.prob != null) {
      stat('p', fmtProb(tok.prob));
      stat(t('tip.rank'), String(tok.rank));
      stat('H', fmtNum(tok.entropy, 2));
      if (tok.sample_prob != null) stat(t('tip.sampleProb'), fmtProb(tok.sample_prob));
    }
  };

  const renderRunSummary = () => { $('run-summary').textContent = runSummaryText(store.get().run, t); };

  const renderTabs = (view) => {
    for (const g of doc.querySelectorAll('.tool-group, .view-extra')) g.hidden = g.dataset.for !== view;
    for (const tab of doc.querySelectorAll('.tab')) {
      const active = tab.dataset.view === view;
      tab.classList.toggle('active', active);
      tab.setAttribute('aria-selected', active ? 'true' : 'false');
      tab.tabIndex = active ? 0 : -1;
    }
  };

  // ---------- the chart ----------
  const chartSize = () => ({ width: $('chart').clientWidth, height: $('chart').clientHeight });
  const tabName = (view) => t(`tab.${view}`);
  /** The chart's accessible summary: the view's name and its caption (or message). */
  const labelChart = (view, text) => {
    $('chart').setAttribute('aria-label', t('view.chartLabel', { view: tabName(view), caption: text || '' }).trim());
  };

  // Each view has its own loading state: a stale chart or caption never shows under another
  // tab's name. A loader may say more through ctx.progress({text, done, total}) and offer a
  // Stop button through ctx.onStop(fn).
  let loadingTimer = 0;
  let loadingShowTimer = 0;
  let stopHandler = null;
  const loadingEl = $('view-loading');
  const setProgress = ({ text, done, total } = {}) => {
    if (text != null) $('view-loading-text').textContent = `${tabName(loadingEl.dataset.view)} · ${text}`;
    if (done != null && total) $('view-loading-progress').textContent = t('view.progress', { done, total });
  };
  const startLoading = (view, { clear }) => {
    const wrap = $('chart').closest('.chart-wrap');
    wrap.classList.add('loading');
    stopHandler = null;
    $('view-stop').hidden = true;
    $('view-loading-text').textContent = t('view.loading', { view: tabName(view) });
    $('view-loading-progress').textContent = '';
    $('view-loading-time').textContent = '';
    loadingEl.dataset.view = view;
    const began = Date.now();
    clearInterval(loadingTimer);
    loadingTimer = setInterval(() => {
      $('view-loading-time').textContent = t('view.elapsed', { s: Math.round((Date.now() - began) / 1000) });
    }, 1000);
    const show = () => { loadingEl.hidden = false; };
    clearTimeout(loadingShowTimer);
    if (clear) {
      // another tab: nothing of the previous one stays on show
      host.showMessage('', view);
      $('chart-overlay').hidden = true;
      $('view-caption').textContent = '';
      labelChart(view, t('view.loading', { view: tabName(view) }));
      show();
    } else {
      loadingShowTimer = setTimeout(show, 400); // a quick redraw of the same view does not flash
    }
  };
  const stopLoading = () => {
    $('chart').closest('.chart-wrap').classList.remove('loading');
    clearInterval(loadingTimer);
    clearTimeout(loadingShowTimer);
    loadingEl.hidden = true;
    $('view-stop').hidden = true;
    stopHandler = null;
  };
  $('view-stop').addEventListener('click', () => {
    const fn = stopHandler;
    stopHandler = null;
    $('view-stop').hidden = true;
    if (fn) fn();
  });

  let viewSeq = 0; // number of the latest redraw: a late answer to an older one is dropped
  let viewAbort = null; // aborted when a newer redraw starts (ctx.signal of the loader)

  /** Draw the view on show from the store's state, through its registered loader. */
  async function refreshView() {
    const seq = ++viewSeq;
    const s = store.get();
    const { view } = s;
    if (!host) return;
    if (!s.run) {
      stopLoading();
      const text = t(s.streaming ? 'stream.viewsWait' : 'view.empty');
      host.showMessage(text, view);
      labelChart(view, text);
      $('view-caption').textContent = '';
      return;
    }
    viewAbort?.abort();
    const abort = new AbortController();
    viewAbort = abort;
    const shownBefore = s.shown;
    startLoading(view, { clear: !shownBefore || shownBefore.view !== view || shownBefore.runId !== s.run.run_id });
    try {
      const ctx = {
        t, state: s, selected: s.selected, labels: s.labels.short, longLabels: s.labels.long, ...chartSize(),
        signal: abort.signal,
        progress: (p) => { if (seq === viewSeq) setProgress(p); },
        onStop: (fn) => {
          if (seq !== viewSeq) return;
          stopHandler = fn;
          $('view-stop').hidden = false;
          loadingEl.hidden = false;
        },
      };
      const built = await registry.load(view, s.run, ctx);
      if (seq !== viewSeq) return;
      if (built.message) {
        host.showMessage(built.message, view);
        labelChart(view, built.message);
        $('view-caption').textContent = '';
        store.set({ shown: { view, runId: s.run.run_id, meta: {}, stopped: Boolean(built.stopped) } });
        return;
      }
      store.set({ shown: { view, runId: s.run.run_id, meta: built.meta || {} } });
      host.render(view, built.option, built.meta);
      $('view-caption').textContent = built.caption || '';
      labelChart(view, built.caption || '');
    } catch (err) {
      if (seq !== viewSeq || err?.name === 'AbortError') return;
      showError(err.message || String(err));
      host.showMessage(err.message || String(err), view);
      labelChart(view, err.message || String(err));
      store.set({ shown: { view, runId: s.run.run_id, meta: {} } });
    } finally {
      if (seq === viewSeq) stopLoading();
    }
  }

  // Several changes made in one go (a new run, its selection, its diff pair) redraw once.
  let refreshQueued = false;
  const scheduleRefresh = () => {
    if (refreshQueued) return;
    refreshQueued = true;
    queueMicrotask(() => { refreshQueued = false; refreshView(); });
  };

  // ---------- store -> page ----------
  const watched = registry.watched();
  store.subscribe((s, prev, changed) => {
    const runChanged = changed.has('run');
    if (runChanged && s.run) {
      conversation.render(s.run);
      convEl.dataset.runId = s.run.run_id; // test hook: the run on show
    }
    if (touched(changed, 'run', 'selected') && s.run && s.selected != null) {
      conversation.select(s.selected, { scroll: s.scrollToSelected });
      convEl.dataset.selected = String(s.selected);
    }
    if (changed.has('metric')) {
      conversation.setMetric(s.metric);
      $('metric-select').value = s.metric;
    }
    if (touched(changed, 'run', 'metric')) renderLegend();
    if (runChanged) renderRunSummary();
    if (touched(changed, 'run', 'selected')) renderSelectionBar();
    if (changed.has('view')) renderTabs(s.view);
    if (runChanged && s.run) registry.emit('onRun', s.run);
    if (changed.has('model') && s.model) registry.emit('onModel', s.model);
    if ([...changed].some((k) => watched.has(k))) scheduleRefresh();
  });

  // ---------- page events -> store ----------
  for (const tab of doc.querySelectorAll('.tab')) {
    tab.addEventListener('click', () => {
      store.set({ view: tab.dataset.view });
      scheduleRefresh(); // a click on the tab on show redraws it too
    });
  }
  $('tabs').addEventListener('keydown', (ev) => {
    if (ev.key !== 'ArrowLeft' && ev.key !== 'ArrowRight') return;
    ev.preventDefault();
    ev.stopPropagation();
    const views = registry.views();
    const i = views.indexOf(store.get().view);
    const next = views[(i + (ev.key === 'ArrowRight' ? 1 : views.length - 1)) % views.length];
    store.set({ view: next });
    $(`tab-${next}`).focus();
  });
  $('metric-select').addEventListener('change', (ev) => store.set({ metric: ev.target.value }));

  $('save-png').addEventListener('click', () => {
    const s = store.get();
    if (!host || !s.run) return;
    // the saved image carries its title, caption, model, run and position (exportframe.js)
    const { chart } = host;
    const frame = exportFrame(s, $('view-caption').textContent, t);
    const png = chart.getDataURL({ type: 'png', pixelRatio: 2, backgroundColor: PALETTE.panel });
    framePNG(doc, png, chart.getWidth(), chart.getHeight(), 2, frame)
      .then((url) => download(doc, url, `llmvis-${s.view}-${registry.exportDetail(s.view, s)}.png`))
      .catch((err) => showError(err.message || String(err)));
  });

  doc.addEventListener('keydown', (ev) => {
    const { run, selected } = store.get();
    if (!run || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (focusWantsArrows(ev.target)) return;
    const n = run.tokens.length;
    const cur = selected ?? 0;
    const moves = { ArrowLeft: cur - 1, ArrowRight: cur + 1, Home: 0, End: n - 1 };
    if (!(ev.key in moves)) return;
    ev.preventDefault();
    select(moves[ev.key]);
  });

  if (host) {
    const clickCtx = {
      select,
      /** Data coordinates of a canvas point inside the first grid, or null outside it. */
      gridCoord: (point) => (host.chart.containPixel({ gridIndex: 0 }, point)
        ? host.chart.convertFromPixel({ gridIndex: 0 }, point) : null),
    };
    host.on('click', (p) => { registry.click(p, store.get().shown, clickCtx); });
    host.zr().on('click', (ev) => {
      if (!store.get().run) return;
      registry.click({ source: 'canvas', point: [ev.offsetX, ev.offsetY] }, store.get().shown, clickCtx);
    });
    // Re-layout (label thinning depends on size) after the chart area changes noticeably.
    let lastSize = chartSize();
    let resizeTimer = 0;
    new ResizeObserver(() => {
      const s = chartSize();
      if (Math.abs(s.width - lastSize.width) < 40 && Math.abs(s.height - lastSize.height) < 40) return;
      lastSize = s;
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (store.get().run) scheduleRefresh(); }, 250);
    }).observe($('chart'));
  }

  const applyLanguage = () => {
    i18n.apply(doc);
    $('lang-toggle').textContent = t('lang.toggleLabel');
    $('lang-toggle').dataset.lang = i18n.lang;
    const { run, selected } = store.get();
    if (run) {
      conversation.render(run);
      if (selected != null) conversation.select(selected, { scroll: false });
    }
    registry.emit('onLanguage');
    renderLegend();
    renderRunSummary();
    renderSelectionBar();
    scheduleRefresh();
  };
  $('lang-toggle').addEventListener('click', () => {
    i18n.setLang(i18n.lang === 'en' ? 'zh' : 'en');
  });
  i18n.onChange(applyLanguage);

  // ---------- start ----------
  renderTabs(store.get().view);
  conversation.setMetric(store.get().metric);
  applyLanguage();
  api.model().then((m) => {
    store.set({ model: m, layer: 0, projLayer: Math.round(m.num_layers / 2) });
    doc.body.dataset.ready = 'true';
  }).catch((err) => {
    showError(t('err.network', { msg: err.message || String(err) }));
    doc.body.dataset.ready = 'true';
  });
}

boot();
