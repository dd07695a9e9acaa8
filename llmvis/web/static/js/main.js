// Entry point: wires the controls, the conversation and the views together.
// All state lives in the `app` object created in boot(); nothing is put on window.

import { createApi } from './api.js';
import { createChartHost } from './charts.js';
import { createControls } from './controls.js';
import { createConversation } from './conversation.js';
import { createI18n } from './i18n.js';
import { fmtNum, fmtProb, tokenLabels } from './tokens.js';
import {
  attentionRequest, attentionRowToPosition, buildAttentionOption, headLabel,
} from './views/attention.js';
import { buildEntropyOption } from './views/entropy.js';
import { buildProbsOption, cutMassText } from './views/probs.js';
import { buildProjectionOption } from './views/projection.js';
import { buildSimilarityOption } from './views/similarity.js';
import { createInsights } from './insights.js';
import { createInteractive } from './interactive.js';
import { createKeeper } from './keep.js';
import { createEstimate } from './estimate.js';

const VIEWS = ['attention', 'probs', 'entropy', 'similarity', 'projection', 'lens', 'heads', 'sampler', 'diff'];

/** Is the keyboard focus somewhere that wants arrow keys for itself? */
function focusWantsArrows(target) {
  if (!target || !(target instanceof Element)) return false;
  return Boolean(target.closest('input, textarea, select, [contenteditable=""], [contenteditable="true"]'));
}

function option(value, text) {
  const o = document.createElement('option');
  o.value = String(value);
  o.textContent = text;
  return o;
}

function boot() {
  const doc = document;
  const $ = (id) => doc.getElementById(id);
  const i18n = createI18n(window);
  const { t } = i18n;
  const api = createApi();
  const controls = createControls(doc, { i18n });
  createEstimate(doc, { api, controls, i18n });

  const state = {
    model: null,
    run: null,
    selected: null,
    view: 'attention',
    layer: 0,
    head: 'mean',
    scale: 'sqrt',
    attnRange: 'all',
    topN: 20,
    projLayer: null,
    metric: 'prob',
  };
  let viewSeq = 0;
  let lastBuilt = { view: null, meta: {} };
  let runLabels = { short: [], long: [] };

  const conversation = createConversation($('conversation'), {
    tooltip: $('token-tooltip'),
    i18n,
    onSelect: (pos) => select(pos),
  });
  // Layers (logit lens) and Heads tabs, and the segment labels in the conversation.
  const insights = createInsights({
    doc,
    api,
    t,
    conversationRoot: $('conversation'),
    getSelected: () => state.selected,
    getAttention: () => ({ layer: state.layer, head: state.head }),
    refresh: () => refreshView(),
    openHead: (layer, head) => {
      state.layer = layer;
      state.head = head;
      $('layer-select').value = String(layer);
      $('head-select').value = String(head);
      state.view = 'attention';
      refreshView();
    },
  });

  // Streaming + Stop, sampler view, forks and their tree, run diff, Score text mode.
  const interactive = createInteractive({
    doc,
    api,
    i18n,
    controls,
    conversation,
    hooks: {
      getRun: () => state.run,
      showRun: (run, opts) => showRun(run, opts),
      setView: (view) => { state.view = view; refreshView(); },
      refreshView: () => refreshView(),
    },
  });

  const echarts = globalThis.echarts;
  if (!echarts) {
    controls.showError(t('err.noEcharts'));
  }
  const host = echarts ? createChartHost($('chart'), {
    echarts,
    overlay: $('chart-overlay'),
    overlayText: $('chart-overlay-text'),
  }) : null;

  // History list, import/export/share-HTML, SVG export and ?run=<id> (keep.js).
  const keeper = createKeeper({
    doc,
    win: window,
    i18n,
    echarts,
    hooks: {
      getRun: () => state.run,
      showRun: (run) => showRun(run),
      chart: () => host?.chart ?? null,
      view: () => state.view,
      showError: (msg) => controls.showError(msg),
      clearError: () => controls.clearError(),
    },
  });

  // ---------- small renderers ----------
  const renderLegend = () => {
    const lg = conversation.legend();
    $('legend-bar').style.background = lg.gradient;
    $('legend-lo').textContent = lg.lo;
    $('legend-hi').textContent = lg.hi;
  };

  const renderSelectionBar = () => {
    const bar = $('selection-bar');
    bar.replaceChildren();
    const tok = state.run && state.selected != null ? state.run.tokens[state.selected] : null;
    if (!tok) {
      const span = doc.createElement('span');
      span.className = 'sel-empty';
      span.textContent = t('sel.none');
      bar.append(span);
      return;
    }
    const pill = (cls, text) => {
      const s = doc.createElement('span');
      s.className = cls;
      s.textContent = text;
      bar.append(s);
    };
    pill('sel-pos', t('sel.position', { pos: tok.position }));
    pill('sel-tok', conversation.visibleTokenText(tok.position));
    pill(`sel-src ${tok.source}`, t(`tip.source.${tok.source}`));
    const stat = (label, value) => {
      const s = doc.createElement('span');
      s.className = 'sel-stat';
      const k = doc.createElement('span');
      k.className = 'k';
      k.textContent = label;
      s.append(k, ` ${value}`);
      bar.append(s);
    };
    if (tok.prob != null) {
      stat('p', fmtProb(tok.prob));
      stat(t('tip.rank'), String(tok.rank));
      stat('H', fmtNum(tok.entropy, 2));
      if (tok.sample_prob != null) stat(t('tip.sampleProb'), fmtProb(tok.sample_prob));
    }
  };

  const renderRunSummary = () => {
    const el = $('run-summary');
    const run = state.run;
    if (!run) { el.textContent = ''; return; }
    const special = interactive.summary(run);
    if (special) { el.textContent = special; return; }
    const nGen = run.tokens.filter((x) => x.source === 'generated').length;
    const tps = run.timing?.tokens_per_s;
    el.textContent = t('run.summary', {
      n: nGen,
      tps: Number.isFinite(tps) ? tps.toFixed(1) : '—',
      reason: t(`run.reason.${run.finish_reason}`),
    });
  };

  const fillLayerSelects = () => {
    const m = state.model;
    if (!m) return;
    const L = m.num_layers;
    const layerSel = $('layer-select');
    layerSel.replaceChildren(...Array.from({ length: L }, (_, l) => option(l, t('layer.n', { l }))));
    layerSel.value = String(state.layer);
    const headSel = $('head-select');
    const groupSize = Math.max(1, Math.round(m.num_heads / (m.num_kv_heads || m.num_heads)));
    headSel.replaceChildren(
      option('mean', t('head.mean')),
      option('max', t('head.max')),
      ...Array.from({ length: m.num_heads }, (_, h) => option(h, headLabel(h, t, groupSize))),
    );
    headSel.value = String(state.head);
    const projSel = $('projection-layer-select');
    projSel.replaceChildren(...Array.from({ length: L + 1 }, (_, l) => option(l, l === 0 ? t('layer.embeddings') : t('layer.n', { l }))));
    projSel.value = String(state.projLayer);
    insights.fillSelects(m);
  };

  const updateToolbar = () => {
    for (const g of doc.querySelectorAll('.tool-group, .view-extra')) g.hidden = g.dataset.for !== state.view;
    for (const tab of doc.querySelectorAll('.tab')) {
      const active = tab.dataset.view === state.view;
      tab.classList.toggle('active', active);
      tab.setAttribute('aria-selected', active ? 'true' : 'false');
      tab.tabIndex = active ? 0 : -1;
    }
  };

  // ---------- views ----------
  const chartSize = () => ({ width: $('chart').clientWidth, height: $('chart').clientHeight });

  const groupSize = () => {
    const m = state.model;
    return m ? Math.max(1, Math.round(m.num_heads / (m.num_kv_heads || m.num_heads))) : 1;
  };

  const loaders = {
    async attention(run, ctx) {
      const extra = attentionRequest(run.tokens.length, state.attnRange, state.selected);
      const data = await api.attention(run.run_id, state.layer, state.head, extra);
      return buildAttentionOption(data, { ...ctx, scale: state.scale, groupSize: groupSize() });
    },
    async probs(run, ctx) {
      const pos = state.selected;
      if (pos == null || pos <= 0) {
        $('cut-mass').textContent = '';
        return { message: t('view.pickToken') };
      }
      const data = await api.tokenProbs(run.run_id, pos, state.topN);
      $('cut-mass').textContent = cutMassText(data, t);
      return buildProbsOption(data, ctx);
    },
    async entropy(run, ctx) {
      return buildEntropyOption(run, ctx);
    },
    async similarity(run, ctx) {
      const data = await api.hiddenSimilarity(run.run_id);
      return buildSimilarityOption(data, ctx);
    },
    async projection(run, ctx) {
      const data = await api.projection(run.run_id, state.projLayer);
      const built = buildProjectionOption(data, { ...ctx, run });
      $('explained-variance').textContent = built.variance;
      return built;
    },
  };

  Object.assign(loaders, insights.loaders);
  Object.assign(loaders, interactive.loaders);

  const setLoading = (on) => { $('chart').closest('.chart-wrap').classList.toggle('loading', on); };

  async function refreshView() {
    const seq = ++viewSeq;
    const view = state.view;
    updateToolbar();
    if (!host) return;
    const run = state.run;
    if (!run) {
      host.showMessage(t(interactive.streaming ? 'stream.viewsWait' : 'view.empty'), view);
      $('view-caption').textContent = '';
      return;
    }
    setLoading(true);
    try {
      const ctx = {
        t, selected: state.selected, labels: runLabels.short, longLabels: runLabels.long, ...chartSize(),
      };
      const built = await loaders[view](run, ctx);
      if (seq !== viewSeq) return;
      if (built.message) {
        host.showMessage(built.message, view);
        $('view-caption').textContent = '';
        lastBuilt = { view, meta: {} };
        return;
      }
      lastBuilt = { view, meta: built.meta || {} };
      host.render(view, built.option, built.meta);
      $('view-caption').textContent = built.caption || '';
    } catch (err) {
      if (seq !== viewSeq || err?.name === 'AbortError') return;
      controls.showError(err.message || String(err));
      host.showMessage(err.message || String(err), view);
    } finally {
      if (seq === viewSeq) setLoading(false);
    }
  }

  // ---------- selection ----------
  function select(pos, { scroll = true } = {}) {
    if (!state.run) return;
    const n = state.run.tokens.length;
    const p = Math.max(0, Math.min(n - 1, pos));
    if (p === state.selected) return;
    state.selected = p;
    conversation.select(p, { scroll });
    $('conversation').dataset.selected = String(p);
    renderSelectionBar();
    refreshView();
  }

  // ---------- generation ----------
  /** Show a finished run: chips, summary, views. opts.select: the position to select. */
  function showRun(run, opts = {}) {
    api.clearCache();
    state.run = run;
    state.selected = null;
    runLabels = { short: tokenLabels(run.tokens, 12), long: tokenLabels(run.tokens, 32) };
    if (run.model && !state.model) {
      state.model = run.model;
      state.projLayer = Math.round(run.model.num_layers / 2);
      fillLayerSelects();
    }
    conversation.render(run);
    insights.onRun(run);
    interactive.onRun(run);
    keeper.onRun(run);
    renderLegend();
    renderRunSummary();
    controls.showLastSeed(run.kind === 'score' ? null : (run.params?.seed ?? null));
    $('conversation').dataset.runId = run.run_id;
    const firstGen = run.tokens.findIndex((x) => x.source === 'generated');
    state.selected = null;
    select(opts.select ?? (firstGen >= 0 ? firstGen : run.tokens.length - 1), { scroll: opts.select != null });
    if (state.selected == null) refreshView();
  }

  async function generate() {
    if (doc.body.dataset.busy === 'true') return; // Ctrl+Enter while a run streams
    controls.clearError();
    const { payload, error } = controls.read();
    if (error) {
      controls.showError(error);
      return;
    }
    controls.setBusy(true);
    try {
      // Streamed: chips appear token by token; the views fill in from the finished run.
      const run = await interactive.stream(payload, {
        onStart: () => {
          state.run = null;
          state.selected = null;
          renderSelectionBar();
          renderRunSummary();
          refreshView();
        },
      });
      if (run) showRun(run);
    } catch (err) {
      controls.showError(err.message || String(err));
    } finally {
      controls.setBusy(false);
    }
  }

  // ---------- events ----------
  controls.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    generate();
  });
  $('prompt').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      generate();
    }
  });
  $('seed-last').addEventListener('click', () => controls.reuseSeed());

  for (const tab of doc.querySelectorAll('.tab')) {
    tab.addEventListener('click', () => {
      state.view = tab.dataset.view;
      refreshView();
    });
  }
  $('tabs').addEventListener('keydown', (ev) => {
    if (ev.key !== 'ArrowLeft' && ev.key !== 'ArrowRight') return;
    ev.preventDefault();
    ev.stopPropagation();
    const i = VIEWS.indexOf(state.view);
    const next = VIEWS[(i + (ev.key === 'ArrowRight' ? 1 : VIEWS.length - 1)) % VIEWS.length];
    state.view = next;
    $(`tab-${next}`).focus();
    refreshView();
  });

  $('layer-select').addEventListener('change', (ev) => { state.layer = Number(ev.target.value); refreshView(); });
  $('head-select').addEventListener('change', (ev) => {
    const v = ev.target.value;
    state.head = v === 'mean' || v === 'max' ? v : Number(v);
    refreshView();
  });
  $('scale-select').addEventListener('change', (ev) => { state.scale = ev.target.value; refreshView(); });
  $('range-select').addEventListener('change', (ev) => { state.attnRange = ev.target.value; refreshView(); });
  $('topn-select').addEventListener('change', (ev) => { state.topN = Number(ev.target.value); refreshView(); });
  $('projection-layer-select').addEventListener('change', (ev) => { state.projLayer = Number(ev.target.value); refreshView(); });
  $('metric-select').addEventListener('change', (ev) => {
    state.metric = ev.target.value;
    conversation.setMetric(state.metric);
    renderLegend();
  });

  $('save-png').addEventListener('click', () => {
    if (!host || !state.run) return;
    const detail = {
      attention: `L${state.layer}-${state.head}`,
      probs: `pos${state.selected}`,
      entropy: 'curve',
      similarity: 'layers',
      projection: `L${state.projLayer}`,
    }[state.view] ?? insights.pngDetail(state.view) ?? interactive.pngDetail(state.view, state.selected);
    host.savePNG(`llmvis-${state.view}-${detail}.png`);
  });

  doc.addEventListener('keydown', (ev) => {
    if (!state.run || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (focusWantsArrows(ev.target)) return;
    const n = state.run.tokens.length;
    const cur = state.selected ?? 0;
    const moves = { ArrowLeft: cur - 1, ArrowRight: cur + 1, Home: 0, End: n - 1 };
    if (!(ev.key in moves)) return;
    ev.preventDefault();
    select(moves[ev.key]);
  });

  if (host) {
    host.on('click', (p) => {
      if (insights.onChartClick(p, lastBuilt, select)) return;
      if (interactive.chartClick(p, lastBuilt)) return;
      if (lastBuilt.view === 'attention' && p.seriesId === 'attention') {
        select(attentionRowToPosition(p.data, lastBuilt.meta));
      } else if (lastBuilt.view === 'similarity' && p.seriesId === 'per-token') {
        select(p.data[4] ?? p.data[0]);  // first position of the (possibly pooled) column
      } else if (lastBuilt.view === 'projection' && Array.isArray(p.value) && p.value.length >= 3) {
        select(p.value[2]);
      }
    });
    host.zr().on('click', (ev) => {
      if (lastBuilt.view !== 'entropy' || !state.run) return;
      const pt = [ev.offsetX, ev.offsetY];
      if (!host.chart.containPixel({ gridIndex: 0 }, pt)) return;
      const [x] = host.chart.convertFromPixel({ gridIndex: 0 }, pt);
      select(Math.round(x));
    });
    // Re-layout (label thinning depends on size) after the chart area changes noticeably.
    let lastSize = chartSize();
    let resizeTimer = 0;
    new ResizeObserver(() => {
      const s = chartSize();
      if (Math.abs(s.width - lastSize.width) < 40 && Math.abs(s.height - lastSize.height) < 40) return;
      lastSize = s;
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (state.run) refreshView(); }, 250);
    }).observe($('chart'));
  }

  const applyLanguage = () => {
    i18n.apply(doc);
    $('lang-toggle').textContent = t('lang.toggleLabel');
    $('lang-toggle').dataset.lang = i18n.lang;
    controls.renderModel();
    fillLayerSelects();
    renderLegend();
    renderRunSummary();
    if (state.run) {
      const sel = state.selected;
      conversation.render(state.run);
      insights.remark();
      if (sel != null) conversation.select(sel, { scroll: false });
    }
    interactive.applyLanguage();
    keeper.applyLanguage();
    renderSelectionBar();
    refreshView();
  };
  $('lang-toggle').addEventListener('click', () => {
    i18n.setLang(i18n.lang === 'en' ? 'zh' : 'en');
  });
  i18n.onChange(applyLanguage);

  // ---------- start ----------
  applyLanguage();
  conversation.setMetric(state.metric);
  api.model().then((m) => {
    state.model = m;
    state.layer = 0;
    state.projLayer = Math.round(m.num_layers / 2);
    controls.setModel(m);
    fillLayerSelects();
    keeper.ready();
    doc.body.dataset.ready = 'true';
  }).catch((err) => {
    controls.setModel(null);
    controls.showError(t('err.network', { msg: err.message || String(err) }));
    doc.body.dataset.ready = 'true';
  });
}

boot();
