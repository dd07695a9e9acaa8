// Page glue for the views inside the layers: the Layers tab (logit lens), the Heads tab (head
// grid, the selected token's row across layers, attention by chat segment) and the segment
// labels in the conversation. main.js owns the shared state; this module owns its own controls.

import { headLabel } from './views/attention.js';
import {
  HEAD_METRICS, SEGMENT_COLOURS, buildHeadsGridOption, buildRowOption, buildSegmentsOption, gridCellToHead,
} from './views/heads.js';
import { buildLensOption, expandLensWindow, lensCellToPosition, lensColumns } from './views/lens.js';

function option(doc, value, text) {
  const o = doc.createElement('option');
  o.value = String(value);
  o.textContent = text;
  return o;
}

/** Segment runs that start a labelled part of the conversation (template markup is skipped). Pure. */
export function segmentLabels(segments) {
  const out = [];
  let last = null;
  segments.forEach((s, i) => {
    if (s === 'template') return;
    if (s !== last) out.push({ segment: s, start: i });
    last = s;
  });
  return out;
}

/**
 * Put a label before the first chip of each chat segment (system, user, assistant, think) and
 * set every chip's data-segment (think blocks come from the server). Text via textContent.
 */
export function markSegments(doc, root, segments, t) {
  for (const old of root.querySelectorAll('.seg-label')) old.remove();
  const chips = new Map();
  for (const chip of root.querySelectorAll('[data-testid="token"]')) chips.set(Number(chip.dataset.position), chip);
  segments.forEach((s, i) => {
    const chip = chips.get(i);
    if (!chip) return;
    chip.dataset.segment = s;
    chip.classList.toggle('seg-think', s === 'think');
  });
  for (const { segment, start } of segmentLabels(segments)) {
    const chip = chips.get(start);
    if (!chip) continue;
    let anchor = chip.closest('.ugroup') || chip;
    const before = anchor.previousElementSibling;
    if (before && before.classList.contains('gen-marker')) anchor = before; // label, then "generation"
    const label = doc.createElement('span');
    label.className = `seg-label seg-${segment}`;
    label.setAttribute('data-testid', 'segment-label');
    label.dataset.segment = segment;
    label.dataset.start = String(start);
    label.style.setProperty('--seg-colour', SEGMENT_COLOURS[segment] || '#888');
    label.textContent = t(`tip.segment.${segment}`);
    label.setAttribute('aria-hidden', 'true');
    anchor.before(label);
  }
}

/**
 * Create the insights controller.
 * deps: {doc, api, t, conversationRoot, getSelected(), getAttention() -> {layer, head},
 *        getModel(), refresh(), openHead(layer, head)}
 */
export function createInsights(deps) {
  const { doc, api, conversationRoot } = deps;
  const $ = (id) => doc.getElementById(id);
  const s = { lensMetric: 'prob', lensRange: 'generated', mode: 'grid', metric: 'entropy', rowHead: 'mean' };
  let segments = null;
  let runId = null;

  const updateModeControls = () => {
    for (const el of doc.querySelectorAll('[data-heads-mode]')) el.hidden = el.dataset.headsMode !== s.mode;
  };

  const loaders = {
    async lens(run, ctx) {
      // only the columns on show are computed (and cached) by the server
      const n = run.num_tokens ?? run.tokens.length;
      const { start } = lensColumns(n, run.num_prompt_tokens, s.lensRange);
      const data = expandLensWindow(await api.logitLens(run.run_id, 5, { start, end: n }));
      return buildLensOption(data, { ...ctx, metric: s.lensMetric, range: s.lensRange });
    },
    async heads(run, ctx) {
      updateModeControls();
      if (s.mode === 'row') {
        const pos = deps.getSelected();
        if (pos == null) return { message: deps.t('heads.pickToken') };
        const data = await api.attentionRow(run.run_id, pos, s.rowHead);
        return buildRowOption(data, ctx);
      }
      if (s.mode === 'segments') {
        const data = await api.segments(run.run_id, 1);
        return buildSegmentsOption(data, ctx);
      }
      const data = await api.attentionInsights(run.run_id);
      return buildHeadsGridOption(data, { ...ctx, metric: s.metric, ...deps.getAttention() });
    },
  };

  /** Handle a click on the chart; returns true when it was one of ours. */
  const onChartClick = (p, lastBuilt, select) => {
    if (lastBuilt.view === 'lens' && p.seriesId === 'lens') {
      select(lensCellToPosition(p.data, lastBuilt.meta));
      return true;
    }
    if (lastBuilt.view === 'heads' && p.seriesId === 'heads') {
      const { layer, head } = gridCellToHead(p.data);
      deps.openHead(layer, head);
      return true;
    }
    if (lastBuilt.view === 'heads' && p.seriesId === 'row') {
      select(p.data[0]);
      return true;
    }
    return false;
  };

  const fillSelects = (model) => {
    const { t } = deps;
    if (!model) return;
    const group = Math.max(1, Math.round(model.num_heads / (model.num_kv_heads || model.num_heads)));
    const sel = $('row-head-select');
    sel.replaceChildren(
      option(doc, 'mean', t('head.mean')),
      option(doc, 'max', t('head.max')),
      ...Array.from({ length: model.num_heads }, (_, h) => option(doc, h, headLabel(h, t, group))),
    );
    sel.value = String(s.rowHead);
    const metric = $('heads-metric-select');
    metric.replaceChildren(...HEAD_METRICS.map((m) => option(doc, m, t(`heads.metric.${m}`))));
    metric.value = s.metric;
  };

  const remark = () => {
    if (segments) markSegments(doc, conversationRoot, segments, deps.t);
  };

  /** A new run: fetch its segments (cheap: no attention) and label the conversation. */
  const onRun = async (run) => {
    runId = run.run_id;
    segments = run.tokens.map((x) => x.segment);
    remark();
    try {
      const data = await api.segments(run.run_id, 0);
      if (runId !== run.run_id) return;
      segments = data.segments;
      remark();
      conversationRoot.dataset.segments = 'ready';
    } catch (err) {
      // The labels from the run's own tokens stay; the server's error shows when a view needs it.
      conversationRoot.dataset.segments = 'error';
    }
  };

  const pngDetail = (view) => {
    if (view === 'lens') return `${s.lensMetric}-${s.lensRange}`;
    if (view === 'heads') return s.mode === 'grid' ? `grid-${s.metric}` : s.mode === 'row' ? `row${deps.getSelected()}-${s.rowHead}` : 'segments';
    return undefined;
  };

  const on = (id, key, parse = (v) => v) => {
    $(id).addEventListener('change', (ev) => { s[key] = parse(ev.target.value); deps.refresh(); });
  };
  on('lens-metric-select', 'lensMetric');
  on('lens-range-select', 'lensRange');
  on('heads-mode-select', 'mode');
  on('heads-metric-select', 'metric');
  on('row-head-select', 'rowHead', (v) => (v === 'mean' || v === 'max' ? v : Number(v)));
  updateModeControls();

  return { loaders, onChartClick, fillSelects, remark, onRun, pngDetail };
}
