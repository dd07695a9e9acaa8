// The five core views as one registry feature: attention, probabilities, entropy, hidden-state
// similarity and projection. Their toolbar controls write to the store (layer, head, scale,
// attnRange, topN, projLayer) and are drawn from it; the loaders read the store's state from ctx.

import { attentionRequest, attentionRowToPosition, buildAttentionOption, headLabel } from './views/attention.js';
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

/** page: {doc, api, t, store}. */
export function createCoreViews({ doc, api, t, store }) {
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
  });

  return {
    name: 'core',
    watch: ['run', 'selected', 'view', 'layer', 'head', 'scale', 'attnRange', 'topN', 'projLayer'],
    loaders: {
      async attention(run, ctx) {
        const s = ctx.state;
        const extra = attentionRequest(run.tokens.length, s.attnRange, s.selected);
        const data = await api.attention(run.run_id, s.layer, s.head, extra);
        return buildAttentionOption(data, { ...ctx, scale: s.scale, groupSize: kvGroupSize(s.model) });
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
