// The Overview tab as one registry feature: every head of every layer at once (a "model view",
// as in bertviz), each a small pooled attention map. The grid is a scrolled DOM list of layer
// rows over the chart; a row is fetched (GET /api/attention?head=all&pool=32&format=f16, one
// request per layer) and drawn only once it scrolls into view (IntersectionObserver), two
// requests at a time, so 30 × 9 heads at 1,024 tokens stay responsive. A click on a thumbnail
// opens that layer and head in the Attention tab. What is drawn also goes into the chart below
// the grid as one picture, so PNG and SVG save the overview like any other view.

import { el, kvGroupSize } from './util.js';
import {
  POOL, colourTable, compositeLayout, decodeHeads, exportOption, overviewCaption, overviewScale, thumbnailPixels,
} from './views/overview.js';
import { headLabel } from './views/attention.js';

/** Layer rows fetched at once (the server admits 4 heavy views; leave room for the rest). */
const CONCURRENT = 2;

/** page: {doc, win, api, t, store, chart, showError}. */
export function createOverview({ doc, win, api, t, store, chart, showError }) {
  const wrap = doc.querySelector?.('.chart-wrap');
  const box = el(doc, 'div', 'overview');
  box.id = 'overview';
  box.dataset.testid = 'overview';
  box.hidden = true;
  box.setAttribute('role', 'grid');
  box.tabIndex = -1;
  wrap?.append(box);
  const lut = colourTable();

  // One grid per (run, scale); rebuilt when either changes.
  let grid = null;

  const setExport = () => {
    const instance = chart?.();
    const s = store.get();
    if (!grid || !instance || s.view !== 'overview' || s.shown.view !== 'overview' || s.shown.runId !== grid.runId) return;
    const url = grid.drawnCount ? grid.composite.toDataURL('image/png') : null;
    instance.setOption(exportOption(url, grid.layout.cw, grid.layout.ch, {
      width: instance.getWidth(), height: instance.getHeight(), layers: grid.layers, heads: grid.heads,
      cell: grid.layout.cell, gap: grid.layout.gap, t,
    }), { notMerge: true });
  };
  let exportTimer = 0;
  const scheduleExport = () => { clearTimeout(exportTimer); exportTimer = setTimeout(setExport, 150); };

  /** Every visible row drawn: say so (data-complete, a performance mark) for tests and benchmarks. */
  const checkComplete = () => {
    if (!grid) return;
    const waiting = [...grid.visible].filter((l) => grid.rows[l].dataset.state !== 'drawn');
    box.dataset.drawn = String(grid.drawnCount);
    if (!waiting.length && grid.visible.size) {
      if (box.dataset.complete !== 'true') {
        clearTimeout(exportTimer);
        setExport(); // what is on show is what a PNG or SVG saves from now on
        performance.mark('llmvis:overview-drawn');
      }
      box.dataset.complete = 'true';
    } else box.dataset.complete = 'false';
  };

  const drawRow = (g, layer, answer) => {
    const heads = decodeHeads(answer.buffer, answer.heads, answer.rows, answer.cols);
    g.block = answer.block;
    const ctx2 = g.composite.getContext('2d');
    heads.forEach((m, h) => {
      const { pixels, max } = thumbnailPixels(m, answer.rows, answer.cols, g.scaleName, lut);
      const canvas = g.canvases[layer][h];
      canvas.width = answer.cols;
      canvas.height = answer.rows;
      const image = new ImageData(pixels, answer.cols, answer.rows);
      canvas.getContext('2d').putImageData(image, 0, 0);
      canvas.parentElement.title = `${t('overview.cell', { l: layer, h: headLabel(h, t, g.group) })} · max ${max.toFixed(3)}`;
      const [x, y] = g.layout.at(layer, h);
      ctx2.drawImage(canvas, x, y, g.layout.cell, g.layout.cell);
    });
    g.rows[layer].dataset.state = 'drawn';
    g.drawnCount += 1;
    scheduleExport();
  };

  const pump = () => {
    const g = grid;
    if (!g) return;
    while (g.inFlight < CONCURRENT && g.queue.length) {
      const layer = g.queue.shift();
      if (!g.visible.has(layer) || g.rows[layer].dataset.state !== 'queued') {
        if (g.rows[layer].dataset.state === 'queued') g.rows[layer].dataset.state = '';
        continue; // scrolled away before its turn: fetched when it comes back
      }
      g.inFlight += 1;
      g.rows[layer].dataset.state = 'loading';
      api.attentionHeadsF16(g.runId, layer, { pool: POOL }, { signal: g.abort.signal })
        .then((answer) => { if (grid === g) drawRow(g, layer, answer); })
        .catch((err) => {
          if (grid !== g) return;
          g.rows[layer].dataset.state = err?.name === 'AbortError' ? '' : 'error';
          if (err?.name !== 'AbortError') showError(err.message || String(err));
        })
        .finally(() => {
          g.inFlight -= 1;
          if (grid === g) { pump(); checkComplete(); }
        });
    }
    checkComplete();
  };

  const enqueue = (g, layer) => {
    if (g.rows[layer].dataset.state) return; // queued, loading, drawn or failed
    g.rows[layer].dataset.state = 'queued';
    g.queue.push(layer);
  };

  const build = (run, s) => {
    grid?.abort.abort();
    grid?.observer?.disconnect();
    const model = s.model || run.model;
    const layers = model.num_layers;
    const heads = model.num_heads;
    const n = run.tokens.length;
    const g = {
      runId: run.run_id, scale: s.scale, scaleName: overviewScale(s.scale, n), layers, heads, n,
      group: kvGroupSize(model), rows: [], canvases: [], queue: [], visible: new Set(), inFlight: 0,
      drawnCount: 0, block: Math.max(1, Math.ceil(n / POOL)), abort: new AbortController(),
      layout: compositeLayout(layers, heads),
    };
    g.composite = doc.createElement('canvas');
    g.composite.width = g.layout.cw;
    g.composite.height = g.layout.ch;
    box.replaceChildren();
    box.style.setProperty('--heads', String(heads));
    box.setAttribute('aria-label', t('tab.overview'));
    box.dataset.complete = 'false';
    box.dataset.drawn = '0';
    box.dataset.runId = run.run_id;
    const head = el(doc, 'div', 'ov-row ov-head');
    head.setAttribute('role', 'row');
    const header = (cls, text) => {
      const c = el(doc, 'span', cls, text);
      c.setAttribute('role', 'columnheader');
      return c;
    };
    head.append(header('ov-corner', t('overview.layer')));
    for (let h = 0; h < heads; h += 1) head.append(header('ov-hlabel', String(h)));
    box.append(head);
    for (let l = 0; l < layers; l += 1) {
      const row = el(doc, 'div', 'ov-row');
      row.setAttribute('role', 'row');
      row.dataset.layer = String(l);
      row.dataset.state = '';
      const label = el(doc, 'span', 'ov-llabel', String(l));
      label.setAttribute('role', 'rowheader');
      row.append(label);
      const cells = [];
      for (let h = 0; h < heads; h += 1) {
        const b = el(doc, 'button', 'ov-cell');
        b.type = 'button';
        b.tabIndex = l === 0 && h === 0 ? 0 : -1;
        b.dataset.testid = 'overview-cell';
        b.dataset.layer = String(l);
        b.dataset.head = String(h);
        b.setAttribute('role', 'gridcell');
        b.setAttribute('aria-label', t('overview.cell', { l, h: headLabel(h, t, g.group) }));
        const c = doc.createElement('canvas');
        c.width = 1;
        c.height = 1;
        b.append(c);
        row.append(b);
        cells.push(c);
      }
      g.rows.push(row);
      g.canvases.push(cells);
      box.append(row);
    }
    grid = g;
    if (win.IntersectionObserver) {
      g.observer = new win.IntersectionObserver((entries) => {
        for (const e of entries) {
          const l = Number(e.target.dataset.layer);
          if (e.isIntersecting) { g.visible.add(l); enqueue(g, l); } else g.visible.delete(l);
        }
        pump();
      }, { root: box, rootMargin: '40px 0px' });
      for (const row of g.rows) g.observer.observe(row);
    } else {
      for (let l = 0; l < layers; l += 1) { g.visible.add(l); enqueue(g, l); }
      pump();
    }
  };

  // A click on a thumbnail opens that layer and head in Attention; arrows move between them.
  box.addEventListener('click', (ev) => {
    const b = ev.target.closest?.('.ov-cell');
    if (!b) return;
    store.set({ layer: Number(b.dataset.layer), head: Number(b.dataset.head), attnZoom: null, view: 'attention' });
  });
  box.addEventListener('keydown', (ev) => {
    const b = ev.target.closest?.('.ov-cell');
    if (!b || !grid) return;
    const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
    if (!(ev.key in moves)) return;
    ev.preventDefault();
    ev.stopPropagation();
    const l = Math.max(0, Math.min(grid.layers - 1, Number(b.dataset.layer) + moves[ev.key][0]));
    const h = Math.max(0, Math.min(grid.heads - 1, Number(b.dataset.head) + moves[ev.key][1]));
    const next = grid.rows[l].children[h + 1];
    b.tabIndex = -1;
    next.tabIndex = 0;
    next.focus();
  });

  const showBox = (on) => {
    box.hidden = !on;
    if (!on && grid) {
      // leaving the tab: stop what is in flight; drawn rows stay for the next visit
      grid.abort.abort();
      grid.abort = new AbortController();
      for (const row of grid.rows) if (row.dataset.state === 'queued' || row.dataset.state === 'loading') row.dataset.state = '';
      grid.queue = [];
    }
  };
  store.subscribe((s, prev, changed) => {
    if (changed.has('view') || changed.has('run')) showBox(s.view === 'overview' && Boolean(s.run));
  });

  return {
    name: 'overview',
    watch: ['run', 'view', 'scale'],
    loaders: {
      async overview(run, ctx) {
        const s = ctx.state;
        if (!(s.model || run.model)) return { message: t('view.loading', { view: t('tab.overview') }) };
        if (!grid || grid.runId !== run.run_id || grid.scale !== s.scale) build(run, s);
        showBox(true);
        // (re)start the rows in view: the observer only speaks when something changes
        for (const l of grid.visible) enqueue(grid, l);
        pump();
        scheduleExport();
        const instance = chart?.();
        return {
          option: exportOption(grid.drawnCount ? grid.composite.toDataURL('image/png') : null, grid.layout.cw, grid.layout.ch, {
            width: instance?.getWidth?.() ?? ctx.width ?? 600, height: instance?.getHeight?.() ?? ctx.height ?? 600,
            layers: grid.layers, heads: grid.heads, cell: grid.layout.cell, gap: grid.layout.gap, t,
          }),
          caption: overviewCaption(t, { layers: grid.layers, heads: grid.heads, n: grid.n, block: grid.block, scaleName: grid.scaleName }),
          meta: { layers: grid.layers, heads: grid.heads, pool: POOL, scale: grid.scaleName },
        };
      },
    },
    exportDetail: (view) => (view === 'overview' ? 'all-heads' : undefined),
    onLanguage: () => { // labels are text of the grid: build it again in the new language
      grid?.abort.abort();
      grid?.observer?.disconnect();
      grid = null;
    },
  };
}
