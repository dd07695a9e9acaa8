// Keeping runs on the page: the history list (reopen, rename, delete), import of a .llmvis file,
// export and share-HTML downloads of the current run, SVG export of the chart, and ?run=<id>.
// Token and title text is untrusted: it is only ever set with textContent.

import { ApiError } from './api.js';
import { PALETTE, download } from './charts.js';

const THEME = 'llmvis-dark';
const DELETE_CONFIRM_MS = 4000;

async function call(url, init = {}) {
  let res;
  try {
    res = await fetch(url, { headers: { Accept: 'application/json' }, ...init });
  } catch (err) {
    throw new ApiError(String(err?.message || err), 0, null);
  }
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!res.ok) throw new ApiError(body?.error || `${res.status} ${res.statusText || 'error'}`, res.status, body);
  return body;
}

/** Human-readable byte count. Pure. */
export function fmtBytes(n) {
  if (!Number.isFinite(n)) return '—';
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** The run id in a page URL's ?run=, if it looks like one. Pure. */
export function runFromSearch(search) {
  const id = new URLSearchParams(search || '').get('run');
  return id && /^[0-9a-f]{8,32}$/.test(id) ? id : null;
}

/** Render a chart's current option into an offscreen SVG-renderer copy; returns the SVG text. */
export function chartToSVG(doc, echarts, chart) {
  const width = chart.getWidth();
  const height = chart.getHeight();
  const box = doc.createElement('div');
  box.style.cssText = `position:fixed;left:-20000px;top:0;width:${width}px;height:${height}px;`;
  doc.body.append(box);
  const copy = echarts.init(box, THEME, { renderer: 'svg', width, height });
  try {
    copy.setOption({ ...chart.getOption(), animation: false, backgroundColor: PALETTE.panel });
    if (typeof copy.renderToSVGString === 'function') return copy.renderToSVGString();
    const url = copy.getDataURL({ type: 'svg' });
    return decodeURIComponent(url.slice(url.indexOf(',') + 1));
  } finally {
    copy.dispose();
    box.remove();
  }
}


/**
 * Wire the history panel. hooks: getRun() -> current run, showRun(run), chart() -> ECharts
 * instance or null, view() -> current view name, showError(msg), clearError().
 */
export function createKeeper({ doc, win, i18n, echarts, hooks }) {
  const { t } = i18n;
  const $ = (id) => doc.getElementById(id);
  const list = $('history-list');
  const note = $('history-note');
  let rows = [];
  let enabled = true;
  let usage = null;

  const currentId = () => hooks.getRun()?.run_id ?? null;

  const dateText = (secs) => {
    try {
      return new Date(secs * 1000).toLocaleString(i18n.lang === 'zh' ? 'zh-CN' : 'en-GB', {
        month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
      });
    } catch { return ''; }
  };

  function iconButton(testid, label, glyph) {
    const b = doc.createElement('button');
    b.type = 'button';
    b.className = 'icon-btn';
    b.dataset.testid = testid;
    b.title = label;
    b.setAttribute('aria-label', label);
    b.textContent = glyph;
    return b;
  }

  function startRename(li, row) {
    const title = li.querySelector('.history-title');
    const input = doc.createElement('input');
    input.type = 'text';
    input.className = 'history-rename-input';
    input.dataset.testid = 'history-rename-input';
    input.maxLength = 200;
    input.value = row.title;
    input.setAttribute('aria-label', t('history.rename'));
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const value = input.value.trim();
      if (save && value && value !== row.title) {
        try {
          await call(`/api/history/${row.run_id}`, {
            method: 'PATCH',
            headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
            body: JSON.stringify({ title: value }),
          });
        } catch (err) { hooks.showError(err.message); }
      }
      await refresh();
    };
    input.addEventListener('keydown', (ev) => {
      ev.stopPropagation();
      if (ev.key === 'Enter') { ev.preventDefault(); finish(true); }
      if (ev.key === 'Escape') { ev.preventDefault(); finish(false); }
    });
    input.addEventListener('blur', () => finish(true));
    li.querySelector('.history-open').replaceWith(input);
    title.remove();
    input.focus();
    input.select();
  }

  async function remove(row) {
    try {
      await call(`/api/history/${row.run_id}`, { method: 'DELETE' });
    } catch (err) { hooks.showError(err.message); }
    await refresh();
  }

  function item(row) {
    const li = doc.createElement('li');
    li.className = 'history-item';
    li.dataset.testid = 'history-item';
    li.dataset.runId = row.run_id;
    if (row.run_id === currentId()) li.classList.add('current');
    if (!row.same_model) li.classList.add('other-model');
    const open = doc.createElement('button');
    open.type = 'button';
    open.className = 'history-open';
    open.dataset.testid = 'history-open';
    const title = doc.createElement('span');
    title.className = 'history-title';
    title.textContent = row.title;
    const meta = doc.createElement('span');
    meta.className = 'history-meta';
    meta.textContent = [t('history.meta', { n: row.num_tokens, date: dateText(row.created) }),
      row.same_model ? null : t('history.otherModel', { model: row.model })].filter(Boolean).join(' · ');
    open.title = row.title;
    open.append(title, meta);
    open.addEventListener('click', () => openRun(row.run_id));
    const rename = iconButton('history-rename', t('history.rename'), '✎');
    rename.addEventListener('click', () => startRename(li, row));
    const del = iconButton('history-delete', t('history.delete'), '✕');
    let armed = 0;
    del.addEventListener('click', () => {
      if (armed) {
        clearTimeout(armed);
        remove(row);
        return;
      }
      del.classList.add('confirm');
      del.textContent = t('history.confirmDelete');
      armed = setTimeout(() => {
        armed = 0;
        del.classList.remove('confirm');
        del.textContent = '✕';
      }, DELETE_CONFIRM_MS);
    });
    li.append(open, rename, del);
    return li;
  }

  function render() {
    list.replaceChildren(...rows.map(item));
    if (!enabled) note.textContent = t('history.disabled');
    else if (!rows.length) note.textContent = t('history.empty');
    else note.textContent = t('history.usage', { count: usage.total, used: fmtBytes(usage.used), budget: fmtBytes(usage.budget) });
    const has = Boolean(currentId());
    $('export-run').disabled = !has;
    $('share-run').disabled = !has;
  }

  async function refresh() {
    try {
      const body = await call('/api/history?limit=200');
      enabled = body.enabled;
      rows = body.runs;
      usage = { total: body.total, used: body.total_bytes, budget: body.budget_bytes };
    } catch (err) {
      rows = [];
      hooks.showError(err.message);
    }
    render();
    list.dataset.loaded = String(Number(list.dataset.loaded || 0) + 1);
  }

  async function openRun(runId) {
    hooks.clearError();
    try {
      const run = await call(`/api/run?run_id=${encodeURIComponent(runId)}`);
      hooks.showRun(run);
    } catch (err) {
      hooks.showError(err.message);
    }
  }

  async function importFile(file) {
    hooks.clearError();
    note.textContent = t('history.importing');
    try {
      const run = await call('/api/import', {
        method: 'POST',
        headers: { 'Content-Type': 'application/octet-stream', Accept: 'application/json' },
        body: file,
      });
      hooks.showRun(run);
    } catch (err) {
      hooks.showError(err.message);
      render();
    }
  }

  $('import-file').addEventListener('change', (ev) => {
    const file = ev.target.files?.[0];
    ev.target.value = '';
    if (file) importFile(file);
  });
  $('export-run').addEventListener('click', () => {
    const id = currentId();
    if (id) download(doc, `/api/runs/${id}/export`, `llmvis-${id}.llmvis`);
  });
  $('share-run').addEventListener('click', () => {
    const id = currentId();
    if (id) download(doc, `/api/runs/${id}/share`, `llmvis-${id}.html`);
  });
  $('save-svg').addEventListener('click', () => {
    const chart = hooks.chart();
    const id = currentId();
    if (!chart || !echarts || !id) return;
    const svg = chartToSVG(doc, echarts, chart);
    const url = URL.createObjectURL(new Blob([svg], { type: 'image/svg+xml' }));
    download(doc, url, `llmvis-${hooks.view()}-${id}.svg`);
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  });

  return {
    refresh,
    /** A run is on screen: mark it in the list, put it in the URL, pick up a newly saved run. */
    onRun(run) {
      const url = new URL(win.location.href);
      url.searchParams.set('run', run.run_id);
      win.history.replaceState(null, '', url);
      refresh();
    },
    /** The model info is loaded: fill the list and reopen ?run= if the URL names one. */
    async ready() {
      const id = runFromSearch(win.location.search);
      await refresh();
      if (id) await openRun(id);
    },
    applyLanguage: render,
  };
}
