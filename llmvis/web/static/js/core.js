// The five core views as one registry feature: attention, probabilities, entropy, hidden-state
// similarity and projection. Their toolbar controls write to the store (layer, head, scale,
// attnRange, topN, projLayer, attnZoom) and are drawn from it; the loaders read the store's
// state from ctx. A rectangle dragged on the attention heatmap zooms into that window (fetched
// at full resolution); "Reset zoom" (or Escape) goes back.

import {
  MINIMAP_CELLS, attentionRequest, attentionRowToPosition, brushWindow, buildAttentionOption, headLabel, zoomRequest,
} from './views/attention.js';
import { buildEntropyOption } from './views/entropy.js';
import { buildProbsOption, cutMassText } from './views/probs.js';
import { buildProjectionOption } from './views/projection.js';
import { buildSimilarityOption } from './views/similarity.js';
import { kvGroupSize, option } from './util.js';

/** A head select's value as state: 'mean', 'max' or a head number. Pure. */
export function parseHead(value) {
  return value === 'mean' || value === 'max' ? value : Number(value);
}

/** The file-name detail of a saved chart of a core view, else undefined. Pure. */
export function coreExportDetail(view, s) {
  return {
    attention: `L${s.layer}-${s.head}`,
    probs: `pos${s.selected}`,
    entropy: 'curve',
    similarity: 'layers',
    projection: `L${s.projLayer}`,
  }[view];
}

/** The position a click on a core chart selects, or null (p: an ECharts click). Pure. */
export function corePositionOf(p, shown) {
  if (shown.view === 'attention' && p.seriesId === 'attention') return attentionRowToPosition(p.data, shown.meta);
  if (shown.view === 'similarity' && p.seriesId === 'per-token') return p.data[4] ?? p.data[0]; // first position of the (possibly pooled) column
  if (shown.view === 'projection' && Array.isArray(p.value) && p.value.length >= 3) return p.value[2];
  return null;
}

/** The zoom of the attention view that applies to run `runId`, or null. Pure. */
export function activeZoom(s, runId) {
  return s.attnZoom && s.attnZoom.runId === runId ? s.attnZoom : null;
}

/** A drag of at least this many pixels on the heatmap is a zoom rectangle, not a click. */
const DRAG_PX = 6;

/** page: {doc, win, api, t, store, chart}. */
export function createCoreViews({ doc, win, api, t, store, chart }) {
  const $ = (id) => doc.getElementById(id);
  const SELECTS = [
    // [element id, store key, parse]
    ['layer-select', 'layer', Number],
    ['head-select', 'head', parseHead],
    ['scale-select', 'scale', String],
    ['range-select', 'attnRange', String],
    ['topn-select', 'topN', Number],
    ['projection-layer-select', 'projLayer', Number],
  ];

  const renderValues = (s) => {
    for (const [id, key] of SELECTS) $(id).value = String(s[key]);
  };

  const fillSelects = () => {
    const s = store.get();
    const m = s.model;
    if (!m) return;
    const L = m.num_layers;
    const group = kvGroupSize(m);
    $('layer-select').replaceChildren(...Array.from({ length: L }, (_, l) => option(doc, l, t('layer.n', { l }))));
    $('head-select').replaceChildren(
      option(doc, 'mean', t('head.mean')),
      option(doc, 'max', t('head.max')),
      ...Array.from({ length: m.num_heads }, (_, h) => option(doc, h, headLabel(h, t, group))),
    );
    $('projection-layer-select').replaceChildren(...Array.from(
      { length: L + 1 },
      (_, l) => option(doc, l, l === 0 ? t('layer.embeddings') : t('layer.n', { l })),
    ));
    renderValues(s);
  };

  for (const [id, key, parse] of SELECTS) {
    $(id).addEventListener('change', (ev) => store.set({ [key]: parse(ev.target.value) }));
  }
  store.subscribe((s, prev, changed) => {
    if (SELECTS.some(([, key]) => changed.has(key))) renderValues(s);
    // a new range, or another run, ends the zoom
    if (s.attnZoom && (changed.has('attnRange') || (changed.has('run') && s.run?.run_id !== s.attnZoom.runId))) {
      store.set({ attnZoom: null });
    }
    if (changed.has('attnZoom') && $('attn-reset-zoom')) $('attn-reset-zoom').hidden = !s.attnZoom;
  });
  const resetZoom = () => store.set({ attnZoom: null });
  $('attn-reset-zoom')?.addEventListener('click', resetZoom);
  win?.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && store.get().attnZoom && store.get().view === 'attention') resetZoom();
  });

  // ---- brush to zoom: drag a rectangle on the attention heatmap ----
  let brushedAt = 0; // the click that ends a drag selects nothing
  const instance = chart?.();
  if (instance && win) {
    const dom = instance.getDom();
    const box = doc.createElement('div');
    box.className = 'attn-brush';
    box.dataset.testid = 'attn-brush';
    box.hidden = true;
    dom.parentElement.append(box);
    let start = null;
    const at = (ev) => {
      const r = dom.getBoundingClientRect();
      return [ev.clientX - r.left, ev.clientY - r.top];
    };
    const draw = (a, b) => {
      box.style.left = `${dom.offsetLeft + Math.min(a[0], b[0])}px`;
      box.style.top = `${dom.offsetTop + Math.min(a[1], b[1])}px`;
      box.style.width = `${Math.abs(a[0] - b[0])}px`;
      box.style.height = `${Math.abs(a[1] - b[1])}px`;
    };
    const far = (a, b) => Math.abs(a[0] - b[0]) >= DRAG_PX || Math.abs(a[1] - b[1]) >= DRAG_PX;
    dom.addEventListener('mousedown', (ev) => {
      const s = store.get();
      if (ev.button !== 0 || s.view !== 'attention' || s.shown.view !== 'attention' || !s.run) return;
      const p = at(ev);
      if (!instance.containPixel({ gridIndex: 0 }, p)) return;
      start = p;
    });
    win.addEventListener('mousemove', (ev) => {
      if (!start) return;
      const p = at(ev);
      box.hidden = !far(start, p);
      if (!box.hidden) draw(start, p);
    });
    win.addEventListener('mouseup', (ev) => {
      if (!start) return;
      const a = start;
      const b = at(ev);
      start = null;
      box.hidden = true;
      if (!far(a, b)) return;
      brushedAt = Date.now();
      const s = store.get();
      if (s.shown.view !== 'attention' || !s.run) return;
      const cell = (p) => instance.convertFromPixel({ gridIndex: 0 }, p);
      const zoom = brushWindow(s.shown.meta, cell(a), cell(b), s.run.tokens.length);
      if (zoom) store.set({ attnZoom: { runId: s.run.run_id, ...zoom } });
    });
  }

  return {
    name: 'core',
    watch: ['run', 'selected', 'view', 'layer', 'head', 'scale', 'attnRange', 'topN', 'projLayer', 'attnZoom'],
    loaders: {
      async attention(run, ctx) {
        const s = ctx.state;
        const zoom = activeZoom(s, run.run_id);
        const extra = zoom ? zoomRequest(zoom) : attentionRequest(run.tokens.length, s.attnRange, s.selected);
        const data = await api.attention(run.run_id, s.layer, s.head, extra);
        // a window shows where it is on a mini-map of the whole (the server has the matrix cached by now)
        const overview = extra.q_start == null ? null
          : await api.attention(run.run_id, s.layer, s.head, { pool: MINIMAP_CELLS });
        return buildAttentionOption(data, {
          ...ctx, scale: s.scale, groupSize: kvGroupSize(s.model), zoom, overview,
        });
      },
      async probs(run, ctx) {
        const pos = ctx.selected;
        if (pos == null || pos <= 0) {
          $('cut-mass').textContent = '';
          return { message: t('view.pickToken') };
        }
        const data = await api.tokenProbs(run.run_id, pos, ctx.state.topN);
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
        const data = await api.projection(run.run_id, ctx.state.projLayer);
        const built = buildProjectionOption(data, { ...ctx, run });
        $('explained-variance').textContent = built.variance;
        return built;
      },
    },
    onChartClick(p, shown, ctx) {
      if (shown.view === 'attention' && Date.now() - brushedAt < 400) return true; // the end of a drag
      if (shown.view === 'entropy' && p.source === 'canvas') {
        // a click anywhere on the entropy plot selects the nearest position
        const at = ctx.gridCoord(p.point);
        if (at) ctx.select(Math.round(at[0]));
        return true;
      }
      const pos = corePositionOf(p, shown);
      if (pos == null) return false;
      ctx.select(pos);
      return true;
    },
    exportDetail: coreExportDetail,
    onModel: fillSelects,
    onLanguage: fillSelects,
  };
}
