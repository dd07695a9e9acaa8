// Keeping runs on the page, as one registry feature: the history list (reopen, rename, delete),
// import of a .llmvis file, export and share-HTML downloads of the current run, SVG export of
// the chart, and ?run=<id>. The list the server gave lives in the store (state.history).
// Token and title text is untrusted: it is only ever set with textContent.

import { PALETTE, download } from './charts.js';
import { el, fmtBytes } from './util.js';

const THEME = 'llmvis-dark';
const DELETE_CONFIRM_MS = 4000;

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


/** page: {doc, win, api, i18n, store, echarts, chart, showRun, showError, clearError}. */
export function createKeeper({ doc, win, api, i18n, store, echarts, chart, showRun, showError, clearError }) {
  const { t } = i18n;
  const $ = (id) => doc.getElementById(id);
  const list = $('history-list');
  const note = $('history-note');

  const currentId = () => store.get().run?.run_id ?? null;

  const dateText = (secs) => {
    try {
      return new Date(secs * 1000).toLocaleString(i18n.lang === 'zh' ? 'zh-CN' : 'en-GB', {
        month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
      });
    } catch { return ''; }
  };

  function iconButton(testid, label, glyph) {
    const b = el(doc, 'button', 'icon-btn', glyph);
    b.type = 'button';
    b.dataset.testid = testid;
    b.title = label;
    b.setAttribute('aria-label', label);
    return b;
  }

  function startRename(li, row) {
    const title = li.querySelector('.history-title');
    const input = el(doc, 'input', 'history-rename-input');
    input.type = 'text';
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
          await api.renameHistory(row.run_id, value);
        } catch (err) { showError(err.message); }
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
      await api.deleteHistory(row.run_id);
    } catch (err) { showError(err.message); }
    await refresh();
  }

  function item(row) {
    const li = el(doc, 'li', 'history-item');
    li.dataset.testid = 'history-item';
    li.dataset.runId = row.run_id;
    if (row.run_id === currentId()) li.classList.add('current');
    if (!row.same_model) li.classList.add('other-model');
    const open = el(doc, 'button', 'history-open');
    open.type = 'button';
    open.dataset.testid = 'history-open';
    const title = el(doc, 'span', 'history-title', row.title);
    const meta = el(doc, 'span', 'history-meta', [
      t('history.meta', { n: row.num_tokens, date: dateText(row.created) }),
      row.same_model ? null : t('history.otherModel', { model: row.model }),
    ].filter(Boolean).join(' · '));
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

  /** Draw state.history and the export buttons (they need a run on show). */
  function render() {
    const { enabled, rows, usage } = store.get().history;
    list.replaceChildren(...rows.map(item));
    if (!enabled) note.textContent = t('history.disabled');
    else if (!rows.length) note.textContent = t('history.empty');
    else note.textContent = t('history.usage', { count: usage.total, used: fmtBytes(usage.used), budget: fmtBytes(usage.budget) });
    const has = Boolean(currentId());
    $('export-run').disabled = !has;
    $('share-run').disabled = !has;
  }

  async function refresh() {
    const prev = store.get().history;
    try {
      const body = await api.history(200);
      store.set({ history: {
        enabled: body.enabled,
        rows: body.runs,
        usage: { total: body.total, used: body.total_bytes, budget: body.budget_bytes },
        loads: prev.loads + 1,
      } });
    } catch (err) {
      store.set({ history: { ...prev, rows: [], loads: prev.loads + 1 } });
      showError(err.message);
    }
  }

  async function openRun(runId) {
    clearError();
    try {
      showRun(await api.run(runId));
    } catch (err) {
      showError(err.message);
    }
  }

  async function importFile(file) {
    clearError();
    note.textContent = t('history.importing');
    try {
      showRun(await api.importRun(file));
    } catch (err) {
      showError(err.message);
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
    const instance = chart();
    const id = currentId();
    if (!instance || !echarts || !id) return;
    const svg = chartToSVG(doc, echarts, instance);
    const url = URL.createObjectURL(new Blob([svg], { type: 'image/svg+xml' }));
    download(doc, url, `llmvis-${store.get().view}-${id}.svg`);
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  });

  store.subscribe((s, prev, changed) => {
    if (!changed.has('history')) return;
    render();
    list.dataset.loaded = String(s.history.loads); // test hook: the list has been (re)loaded
  });

  return {
    name: 'keep',
    /** A run is on show: put it in the URL, pick up a newly saved run (and mark it in the list). */
    onRun(run) {
      const url = new URL(win.location.href);
      url.searchParams.set('run', run.run_id);
      win.history.replaceState(null, '', url);
      refresh();
    },
    /** The model info is loaded: fill the list and reopen ?run= if the URL names one. */
    async onModel() {
      const id = runFromSearch(win.location.search);
      await refresh();
      if (id) await openRun(id);
    },
    onLanguage: () => render(),
  };
}
