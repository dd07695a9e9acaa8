// Keeping runs on the page, as one registry feature: the history list (reopen, rename, delete),
// import of a .llmvis file, export and share-HTML downloads of the current run, SVG export of
// the chart, and ?run=<id>. The list the server gave lives in the store (state.history).
// Token and title text is untrusted: it is only ever set with textContent.

import { PALETTE, download } from './charts.js';
import { formFromRun } from './controls.js';
import { exportFrame, frameSVG } from './exportframe.js';
import { el, fmtBytes } from './util.js';

const THEME = 'llmvis-dark';
const DELETE_CONFIRM_MS = 4000;
const KIND_GLYPH = Object.freeze({ generate: '▶', fork: '⑂', score: '≣' });

/**
 * The store patch that makes the page look as the run was made: the form (prompt, system,
 * sampling settings), the mode and the chip colouring. Pure.
 */
export function restorePatch(run, state) {
  const { form, scoreText, scoreTemplate } = formFromRun(run, state.form || {});
  if (run.kind === 'score') return { form, mode: 'score', scoreText, scoreTemplate, metric: 'gltr' };
  return { form, mode: 'generate', ...(state.metric === 'gltr' ? { metric: 'prob' } : {}) };
}

/** Roving tabindex: the index a key moves to among n items from i, or null for other keys. Pure. */
export function rovingIndex(key, i, n) {
  if (!n) return null;
  if (key === 'ArrowDown') return Math.min(n - 1, i + 1);
  if (key === 'ArrowUp') return Math.max(0, i - 1);
  if (key === 'Home') return 0;
  if (key === 'End') return n - 1;
  return null;
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


/** page: {doc, win, api, i18n, store, echarts, chart, showRun, showError, clearError}. */
export function createKeeper({ doc, win, api, i18n, store, echarts, chart, conversation, showRun, showError, clearError }) {
  const { t } = i18n;
  const $ = (id) => doc.getElementById(id);
  const list = $('history-list');
  const note = $('history-note');

  const currentId = () => store.get().run?.run_id ?? null;
  let focusId = null; // the history row that holds the list's one tab stop (a focus handle, not state)

  /** The page's rule while a run is made: other run actions wait, and say why. */
  const refuseWhileBusy = () => {
    if (!store.get().busy) return false;
    showError(t('err.busyRun'));
    return true;
  };

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

  /** The run on show was deleted: nothing of it stays on the page, nor in the URL. */
  function forgetShown() {
    store.set({ run: null, selected: null, lastSeed: null, shown: { view: null, meta: {} } });
    conversation.render({ run_id: null, kind: 'generate', num_prompt_tokens: 0, params: {}, tokens: [] });
    delete $('conversation').dataset.runId;
    const url = new URL(win.location.href);
    url.searchParams.delete('run');
    win.history.replaceState(null, '', url);
    note.textContent = t('history.deletedShown');
  }

  async function remove(row) {
    let deleted = false;
    try {
      await api.deleteHistory(row.run_id);
      deleted = true;
    } catch (err) { showError(err.message); }
    if (deleted && row.run_id === currentId()) forgetShown();
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
    const kind = KIND_GLYPH[row.kind] ? row.kind : 'generate';
    li.dataset.kind = kind;
    const title = el(doc, 'span', 'history-title', row.title);
    const icon = el(doc, 'span', 'history-kind', KIND_GLYPH[kind]);
    icon.dataset.testid = 'history-kind';
    icon.dataset.kind = kind;
    icon.title = t(`history.kind.${kind}`);
    icon.setAttribute('aria-label', t(`history.kind.${kind}`));
    const parentRow = row.parent_id ? store.get().history.rows.find((r) => r.run_id === row.parent_id) : null;
    const meta = el(doc, 'span', 'history-meta', [
      t(`history.kind.${kind}`),
      row.parent_id ? t('history.forkOf', { parent: parentRow ? parentRow.title : row.parent_id.slice(0, 8) }) : null,
      t('history.meta', { n: row.num_tokens, date: dateText(row.created) }),
      row.same_model ? null : t('history.otherModel', { model: row.model }),
    ].filter(Boolean).join(' · '));
    open.title = row.title;
    open.append(icon, title, meta);
    open.addEventListener('click', () => { if (!refuseWhileBusy()) openRun(row.run_id); });
    open.setAttribute('aria-disabled', store.get().busy ? 'true' : 'false');
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
    for (const b of [open, rename, del]) b.tabIndex = -1; // the list is one tab stop (roving)
    return li;
  }

  /** Draw state.history and the export buttons (they need a run on show). */
  function render() {
    const { enabled, rows, usage } = store.get().history;
    list.replaceChildren(...rows.map(item));
    const items = [...list.children];
    if (items.length) {
      const at = Math.max(0, items.findIndex((li) => li.dataset.runId === (focusId ?? currentId())));
      const stop = items[at].querySelector('.history-open');
      if (stop) stop.tabIndex = 0;
    }
    if (!enabled) note.textContent = t('history.disabled');
    else if (!rows.length) note.textContent = t('history.empty');
    else note.textContent = t('history.usage', { count: usage.total, used: fmtBytes(usage.used), budget: fmtBytes(usage.budget) });
    const has = Boolean(currentId());
    $('export-run').disabled = !has;
    $('share-run').disabled = !has;
    renderChartExport();
  }

  /** PNG / SVG save a chart: off without a run, and while the chart area shows only a message. */
  const overlay = $('chart-overlay');
  function renderChartExport() {
    const off = !currentId() || (overlay ? !overlay.hidden : false);
    for (const id of ['save-png', 'save-svg']) if ($(id)) $(id).disabled = off;
  }
  if (overlay && win.MutationObserver) {
    new win.MutationObserver(renderChartExport).observe(overlay, { attributes: true, attributeFilter: ['hidden'] });
  }

  // ---- keyboard: the history list is one tab stop; arrows move, Enter opens ----
  list.addEventListener('keydown', (ev) => {
    const items = [...list.querySelectorAll('.history-item')];
    const li = ev.target.closest?.('.history-item');
    if (!li || ev.target.tagName === 'INPUT') return;
    const next = rovingIndex(ev.key, items.indexOf(li), items.length);
    const buttons = [...li.querySelectorAll('button')];
    const bi = buttons.indexOf(ev.target);
    let target = null;
    if (next != null) target = items[next].querySelector('.history-open');
    else if (ev.key === 'ArrowRight' && bi >= 0) target = buttons[Math.min(buttons.length - 1, bi + 1)];
    else if (ev.key === 'ArrowLeft' && bi >= 0) target = buttons[Math.max(0, bi - 1)];
    if (!target) return;
    ev.preventDefault();
    for (const b of list.querySelectorAll('button')) b.tabIndex = -1;
    target.tabIndex = 0;
    focusId = target.closest('.history-item').dataset.runId;
    target.focus();
  });
  list.addEventListener('focusin', (ev) => {
    const li = ev.target.closest?.('.history-item');
    if (li) focusId = li.dataset.runId;
  });

  // ---- Import… is a label around a hidden file input: make it a keyboard button ----
  const importLabel = $('import-file').closest('label');
  if (importLabel) {
    importLabel.tabIndex = 0;
    importLabel.setAttribute('role', 'button');
    importLabel.dataset.testid = 'import-button';
    importLabel.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Enter' && ev.key !== ' ') return;
      ev.preventDefault();
      $('import-file').click();
    });
    importLabel.addEventListener('click', (ev) => {
      if (store.get().busy) { ev.preventDefault(); refuseWhileBusy(); }
    });
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

  /** Put a reopened run on show, the form, mode and colouring as it was made (restore). */
  const showRestored = (run) => {
    showRun(run, run.kind === 'fork' ? { select: run.fork_position } : {});
    store.set(restorePatch(run, store.get()));
  };

  async function openRun(runId) {
    clearError();
    try {
      showRestored(await api.run(runId));
    } catch (err) {
      showError(err.message);
    }
  }

  async function importFile(file) {
    if (refuseWhileBusy()) return;
    clearError();
    note.textContent = t('history.importing');
    try {
      showRestored(await api.importRun(file));
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
    if (id) download(doc, `api/runs/${id}/export`, `llmvis-${id}.llmvis`);
  });
  $('share-run').addEventListener('click', () => {
    const id = currentId();
    if (id) download(doc, `api/runs/${id}/share`, `llmvis-${id}.html`);
  });
  $('save-svg').addEventListener('click', () => {
    const instance = chart();
    const id = currentId();
    if (!instance || !echarts || !id) return;
    const frame = exportFrame(store.get(), $('view-caption').textContent, t); // title and caption (exportframe.js)
    const svg = frameSVG(chartToSVG(doc, echarts, instance), instance.getWidth(), instance.getHeight(), frame);
    const url = URL.createObjectURL(new Blob([svg], { type: 'image/svg+xml' }));
    download(doc, url, `llmvis-${store.get().view}-${id}.svg`);
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  });

  store.subscribe((s, prev, changed) => {
    if (changed.has('run') || changed.has('busy')) {
      renderChartExport();
      if (importLabel) {
        importLabel.setAttribute('aria-disabled', s.busy ? 'true' : 'false');
        importLabel.title = s.busy ? t('err.busyRun') : t('history.importTitle');
      }
      for (const b of list.querySelectorAll('.history-open')) {
        b.setAttribute('aria-disabled', s.busy ? 'true' : 'false');
      }
    }
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
