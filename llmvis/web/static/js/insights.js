// Page glue for the views inside the layers, as one registry feature: the Layers tab (logit
// lens), the Heads tab (head grid, the selected token's row across layers, attention by chat
// segment) and the segment labels in the conversation. Its settings (lensMetric, lensRange,
// headsMode, headsMetric, rowHead) and the run's segments live in the store.

import { headLabel } from './views/attention.js';
import {
  HEAD_METRICS, SEGMENT_COLOURS, buildHeadsGridOption, buildRowOption, buildSegmentsOption, gridCellToHead,
} from './views/heads.js';
import {
  LENS_PROBE, buildLensOption, expandLensWindow, fmtSeconds, lensCellToPosition, lensColumns, lensNeedsConfirm,
} from './views/lens.js';
import { decorateHeadsGrid, toggleHead, kvGroupOf } from './views/intervene.js';
import { parseHead } from './core.js';
import { el, kvGroupSize, option } from './util.js';

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
    const label = el(doc, 'span', `seg-label seg-${segment}`, t(`tip.segment.${segment}`));
    label.setAttribute('data-testid', 'segment-label');
    label.dataset.segment = segment;
    label.dataset.start = String(start);
    label.style.setProperty('--seg-colour', SEGMENT_COLOURS[segment] || '#888');
    label.setAttribute('aria-hidden', 'true');
    anchor.before(label);
  }
}

/** The file-name detail of a saved Layers or Heads chart, else undefined. Pure. */
export function insightsExportDetail(view, s) {
  if (view === 'lens') return `${s.lensMetric}-${s.lensRange}`;
  if (view === 'heads') {
    if (s.headsMode === 'grid') return `grid-${s.headsMetric}`;
    return s.headsMode === 'row' ? `row${s.selected}-${s.rowHead}` : 'segments';
  }
  return undefined;
}

/** Why "attention by segment" has nothing to draw for a run without generated tokens. Pure. */
export function segmentsNothingToSplit(run, t) {
  const names = [...new Set(run.tokens.map((x) => x.segment).filter((s) => s && s !== 'template'))];
  return t('segments.nothingToSplit', { k: names.length, names: names.map((s) => t(`tip.segment.${s}`)).join(', ') });
}

/** Lens ranges of at least this many positions run as a named, stoppable job. */
export const LENS_JOB_MIN = 32;
const LENS_POLL_MS = 500;

/** A fresh job id: 16 hex digits (the server takes 8 to 32). */
export function newJobId(random = () => Math.random()) {
  let id = '';
  for (let i = 0; i < 16; i += 1) id += Math.floor(random() * 16).toString(16);
  return id;
}

/** page: {doc, api, t, store, select}. */
export function createInsights({ doc, api, t, store, chart }) {
  const $ = (id) => doc.getElementById(id);
  const conversationRoot = $('conversation');
  const SELECTS = [
    // [element id, store key, parse]
    ['lens-metric-select', 'lensMetric', String],
    ['lens-range-select', 'lensRange', String],
    ['heads-mode-select', 'headsMode', String],
    ['heads-metric-select', 'headsMetric', String],
    ['row-head-select', 'rowHead', parseHead],
  ];

  const renderValues = (s) => {
    for (const [id, key] of SELECTS) $(id).value = String(s[key]);
  };
  const renderModeControls = (mode) => {
    for (const node of doc.querySelectorAll('[data-heads-mode]')) node.hidden = node.dataset.headsMode !== mode;
  };

  const fillSelects = () => {
    const s = store.get();
    const model = s.model;
    if (!model) return;
    const group = kvGroupSize(model);
    $('row-head-select').replaceChildren(
      option(doc, 'mean', t('head.mean')),
      option(doc, 'max', t('head.max')),
      ...Array.from({ length: model.num_heads }, (_, h) => option(doc, h, headLabel(h, t, group))),
    );
    $('heads-metric-select').replaceChildren(...HEAD_METRICS.map((m) => option(doc, m, t(`heads.metric.${m}`))));
    renderValues(s);
  };

  const remark = () => {
    const seg = store.get().segments;
    if (seg) markSegments(doc, conversationRoot, seg.list, t);
  };

  /** A new run: label the conversation from its tokens, then from the server's segments (cheap: no attention). */
  const onRun = async (run) => {
    store.set({ segments: { runId: run.run_id, list: run.tokens.map((x) => x.segment) } });
    try {
      const data = await api.segments(run.run_id, 0);
      if (store.get().segments?.runId !== run.run_id) return;
      store.set({ segments: { runId: run.run_id, list: data.segments } });
      conversationRoot.dataset.segments = 'ready';
    } catch (err) {
      // The labels from the run's own tokens stay; the server's error shows when a view needs it.
      conversationRoot.dataset.segments = 'error';
    }
  };

  for (const [id, key, parse] of SELECTS) {
    $(id).addEventListener('change', (ev) => store.set({ [key]: parse(ev.target.value) }));
  }

  // ---- the Layers tab on long runs: a time estimate first, and the window on show kept ----
  let lensRate = null; // measured seconds per lens position (any run of this model)
  const timed = (answer) => {
    const k = (answer.end ?? 0) - (answer.start ?? 0);
    if (answer.compute_s > 0.05 && k > 0) lensRate = answer.compute_s / k;
    return answer;
  };
  $('lens-compute')?.addEventListener('click', () => {
    const { run } = store.get();
    if (run) store.set({ lensConfirmed: run.run_id });
  });
  /** The first column of the lens window on show, when the same range of the run is on show. */
  const keptWindow = (run, start) => {
    const shown = store.get().shown;
    if (shown.view !== 'lens' || shown.runId !== run.run_id || shown.meta?.start !== start) return null;
    const dz = chart?.()?.getOption?.()?.dataZoom?.[0];
    return Number.isFinite(dz?.startValue) ? dz.startValue : null;
  };
  store.subscribe((s, prev, changed) => {
    if (SELECTS.some(([, key]) => changed.has(key))) renderValues(s);
    if (changed.has('headsMode')) renderModeControls(s.headsMode);
    if (changed.has('segments')) remark();
  });
  renderModeControls(store.get().headsMode);

  return {
    name: 'insights',
    watch: [...SELECTS.map(([, key]) => key), 'lensConfirmed'],
    loaders: {
      async lens(run, ctx) {
        const s = ctx.state;
        // only the columns on show are computed (and cached) by the server
        const n = run.num_tokens ?? run.tokens.length;
        const { start } = lensColumns(n, run.num_prompt_tokens, s.lensRange);
        const count = n - start;
        const opts = { ...ctx, metric: s.lensMetric, range: s.lensRange, keepWindow: keptWindow(run, start) };
        if ($('lens-compute')) $('lens-compute').hidden = true;
        ctx.progress?.({ text: t('view.loadingLens', { n: count }) });
        if (count < LENS_JOB_MIN || !ctx.onStop) {
          const data = expandLensWindow(timed(await api.logitLens(run.run_id, 5, { start, end: n })));
          return buildLensOption(data, opts);
        }
        // A long range says how long it will take before it starts (measured on this machine).
        if (s.lensConfirmed !== run.run_id && lensNeedsConfirm(count, lensRate)) {
          if (lensRate == null) {
            ctx.progress({ text: t('lens.probing', { k: LENS_PROBE }) });
            timed(await api.logitLens(run.run_id, 5, { start, end: Math.min(n, start + LENS_PROBE) }));
          }
          if (lensNeedsConfirm(count, lensRate)) {
            // (no rate when even the probe came from the cache: then the time is not known)
            const time = lensRate == null ? null : fmtSeconds(lensRate * count, t);
            if ($('lens-compute')) {
              $('lens-compute').textContent = time ? t('lens.compute', { time }) : t('lens.computeUntimed');
              $('lens-compute').hidden = false;
            }
            return { message: time ? t('lens.estimate', { n: count, time, per: (lensRate * 1000).toFixed(0) })
              : t('lens.estimateUntimed', { n: count }) };
          }
        }
        // A long range runs as a named job: its progress shows, and Stop cancels it.
        const jobId = newJobId();
        let stopped = false;
        let poll = 0;
        const stop = new Promise((resolve) => {
          ctx.onStop(() => {
            stopped = true;
            api.cancel(jobId).catch(() => {}); // the lens request then answers 409
            resolve(null);
          });
        });
        const follow = async () => {
          try {
            const job = await api.job(jobId);
            const left = lensRate == null ? '' : ` · ${t('lens.remaining', { time: fmtSeconds(lensRate * (job.total - job.done), t) })}`;
            if (!stopped) ctx.progress({ done: job.done, total: job.total, text: t('view.loadingLens', { n: count }) + left });
          } catch { /* not started yet, or already done */ }
        };
        poll = setInterval(follow, LENS_POLL_MS);
        // Superseded by another redraw: stop following; and if the Layers tab was left, stop the job.
        ctx.signal?.addEventListener('abort', () => {
          clearInterval(poll);
          if (store.get().view !== 'lens') api.cancel(jobId).catch(() => {});
        }, { once: true });
        try {
          const answer = await Promise.race([api.logitLens(run.run_id, 5, { start, end: n, job_id: jobId }), stop]);
          if (stopped || answer === null) return { message: t('view.stopped', { view: t('tab.lens') }), stopped: true };
          return buildLensOption(expandLensWindow(timed(answer)), opts);
        } catch (err) {
          if (stopped || err?.status === 409) return { message: t('view.stopped', { view: t('tab.lens') }), stopped: true };
          throw err;
        } finally {
          clearInterval(poll);
        }
      },
      async heads(run, ctx) {
        const s = ctx.state;
        if (s.headsMode === 'row') {
          const pos = ctx.selected;
          if (pos == null) return { message: t('heads.pickToken') };
          const data = await api.attentionRow(run.run_id, pos, s.rowHead);
          return buildRowOption(data, ctx);
        }
        if (s.headsMode === 'segments') {
          // The split is of the generated tokens' attention: a scored text has none to split.
          if (!run.tokens.some((x) => x.source === 'generated')) return { message: segmentsNothingToSplit(run, t) };
          const data = await api.segments(run.run_id, 1);
          return buildSegmentsOption(data, ctx);
        }
        const data = await api.attentionInsights(run.run_id);
        const grid = buildHeadsGridOption(data, { ...ctx, metric: s.headsMetric, layer: s.layer, head: s.head });
        return decorateHeadsGrid(grid, s.ablateHeads, { picking: s.headsPick, t }); // heads picked to ablate (intervene.js)
      },
    },
    onChartClick(p, shown, ctx) {
      if (shown.view === 'lens' && p.seriesId === 'lens') {
        ctx.select(lensCellToPosition(p.data, shown.meta));
        return true;
      }
      if (shown.view === 'heads' && p.seriesId === 'heads' && store.get().headsPick) {
        // picking heads to ablate: a click toggles the head, shift-click its whole KV group
        const { layer, head } = gridCellToHead(p.data);
        const s = store.get();
        store.set({ ablateHeads: toggleHead(s.ablateHeads, layer, head, { group: Boolean(p.event?.event?.shiftKey), kvGroup: kvGroupOf(s.model) }) });
        return true;
      }
      if (shown.view === 'heads' && p.componentType === 'yAxis' && shown.meta?.mode === 'grid') {
        store.set({ ablateLayer: Number(p.value) }); // a layer label picks the layer whose MLP / attention to ablate
        return true;
      }
      if (shown.view === 'heads' && p.seriesId === 'heads') {
        // a head of the grid opens in the attention view
        const { layer, head } = gridCellToHead(p.data);
        store.set({ layer, head, view: 'attention' });
        return true;
      }
      if (shown.view === 'heads' && p.seriesId === 'row') {
        ctx.select(p.data[0]);
        return true;
      }
      return false;
    },
    exportDetail: insightsExportDetail,
    onModel: fillSelects,
    onRun,
    onLanguage: () => { fillSelects(); remark(); },
  };
}
