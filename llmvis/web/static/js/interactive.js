// Page glue for interactive generation: streaming with Stop, the sampler view, forks from any
// candidate bar with their branch tree, the run diff, and the Score text mode. main.js owns the
// shared state (the run shown, the selection, the view); this module owns its own controls and
// the session's list of runs, and calls back into main.js through the hooks it is given.

import { renderForkTree, runLabel, runMeta, treeRows } from './forktree.js';
import { fmtPerplexity, renderScoreSummary } from './score.js';
import { partialRun, streamGenerate } from './stream.js';
import { buildDiffOption, renderDiffTokens } from './views/diff.js';
import { buildSamplerOption, samplerNote } from './views/sampler.js';

const FORKABLE_VIEWS = new Set(['probs', 'sampler']);
const STREAM_RENDER_MS = 40;

/**
 * Default pair for the diff: B is the run shown; A is its parent when it is a fork, else the
 * most recent other run of the session. metas: Map run_id → runMeta. Pure.
 */
export function defaultDiffPair(metas, currentId) {
  const cur = metas.get(currentId);
  if (!cur) return { a: null, b: null };
  if (cur.parent_id && metas.has(cur.parent_id)) return { a: cur.parent_id, b: cur.run_id };
  let best = null;
  for (const m of metas.values()) {
    if (m.run_id !== currentId && (!best || m.order > best.order)) best = m;
  }
  return { a: best ? best.run_id : null, b: cur.run_id };
}

/**
 * hooks: {getRun, showRun(run, {select}), setView(view), refreshView(), getView()}.
 * Returns {stream, streaming, onRun, chartClick, loaders, applyLanguage, metas}.
 */
export function createInteractive({ doc, api, i18n, controls, conversation, hooks }) {
  const $ = (id) => doc.getElementById(id);
  const { t } = i18n;
  const metas = new Map();
  let order = 0;
  let active = null; // {controller, runId, stopped}
  let diffPair = { a: null, b: null };
  let samplerTopN = 20;
  let diffSeq = 0;
  let mode = 'generate';

  // ---------- session runs ----------
  const register = (run) => {
    const prev = metas.get(run.run_id);
    metas.set(run.run_id, runMeta(run, prev ? prev.order : ++order));
    // A fork seen from its parent's `children` before it was loaded is still unknown here;
    // the tree only lists runs this page has shown.
  };

  const renderTree = () => {
    const root = $('fork-tree');
    const run = hooks.getRun();
    const rows = run ? treeRows(metas, run.run_id) : [];
    root.hidden = rows.length < 2;
    if (rows.length < 2) { root.replaceChildren(); return; }
    renderForkTree(root, rows, { t, currentId: run.run_id });
  };

  const fillDiffSelects = () => {
    const list = [...metas.values()].sort((x, y) => y.order - x.order);
    for (const [id, key] of [['diff-a', 'a'], ['diff-b', 'b']]) {
      const sel = $(id);
      sel.replaceChildren(...list.map((m) => {
        const o = doc.createElement('option');
        o.value = m.run_id;
        o.textContent = runLabel(m, t);
        return o;
      }));
      if (diffPair[key] && metas.has(diffPair[key])) sel.value = diffPair[key];
      diffPair[key] = sel.value || null;
    }
  };

  /** Called by main.js whenever a run is shown (generated, streamed, forked, scored, switched). */
  const onRun = (run) => {
    register(run);
    // Parents we have not seen (a run loaded from elsewhere) are fetched once so the tree and
    // the default diff know them.
    if (run.parent_id && !metas.has(run.parent_id)) {
      api.run(run.parent_id).then((parent) => {
        if (!metas.has(parent.run_id)) { register(parent); renderTree(); fillDiffSelects(); }
      }).catch(() => {});
    }
    diffPair = defaultDiffPair(metas, run.run_id);
    renderTree();
    fillDiffSelects();
    renderScoreSummary($('score-summary'), run, { t });
  };

  // ---------- streaming ----------
  const setStreaming = (on) => {
    $('conversation').dataset.streaming = on ? 'true' : 'false';
    $('stop').hidden = !on;
    $('stop').disabled = false;
  };

  /**
   * Generate with streaming. onStart() runs once the server accepted the request (the old run
   * is then cleared by main.js). Resolves with the finished run (also when stopped: the server
   * answers `done` with status "cancelled"), or null when the fetch was aborted.
   */
  async function stream(payload, { onStart = () => {} } = {}) {
    const controller = new AbortController();
    const job = { controller, runId: null, stopped: false };
    active = job;
    let start = null;
    let tokens = [];
    let timer = 0;
    const conv = $('conversation');
    const render = () => {
      timer = 0;
      const nearBottom = conv.scrollTop + conv.clientHeight >= conv.scrollHeight - 48;
      conversation.render(partialRun(start, tokens.slice()));
      if (nearBottom) conv.scrollTop = conv.scrollHeight;
      conv.dataset.streamed = String(tokens.length - (start?.num_prompt_tokens ?? 0));
    };
    const schedule = () => { if (!timer) timer = setTimeout(render, STREAM_RENDER_MS); };
    const onEvent = (kind, data) => {
      if (kind === 'start') {
        start = data;
        job.runId = data.run_id;
        conv.dataset.streamRunId = data.run_id;
        setStreaming(true);
        onStart(data);
        if (job.stopped) cancel(job);
      } else if (kind === 'prompt') {
        tokens = data.tokens.slice();
        schedule();
      } else if (kind === 'token') {
        tokens[data.position] = data;
        schedule();
      }
    };
    try {
      return await streamGenerate('/api/generate/stream', payload, { signal: controller.signal, onEvent });
    } catch (err) {
      if (err?.name === 'AbortError') return null;
      throw err;
    } finally {
      clearTimeout(timer);
      if (active === job) active = null;
      setStreaming(false);
    }
  }

  function cancel(job) {
    job.stopped = true;
    $('stop').disabled = true;
    if (!job.runId) { job.controller.abort(); return; }
    api.cancel(job.runId).catch((err) => {
      // The run may have just finished, or the server may be gone: stop reading either way.
      if (err?.status !== 404) job.controller.abort();
    });
  }

  $('stop').addEventListener('click', () => { if (active) cancel(active); });
  // Leaving or reloading the page closes the stream; the server then cancels the run.
  doc.defaultView.addEventListener('pagehide', () => { if (active) active.controller.abort(); });

  // ---------- fork ----------
  const formNumber = (id) => {
    const v = Number($(id).value);
    return Number.isFinite(v) ? v : undefined;
  };

  async function fork(run, position, tokenId) {
    if (doc.body.dataset.busy === 'true') return;
    controls.clearError();
    controls.setBusy(true);
    const body = { run_id: run.run_id, position, token_id: tokenId };
    if (run.kind === 'score') {
      // A scored text has no sampling settings of its own: continue with the form's.
      Object.assign(body, {
        temperature: formNumber('temperature'),
        top_k: formNumber('top-k'),
        top_p: formNumber('top-p'),
        max_new_tokens: formNumber('max-new-tokens'),
      });
    }
    try {
      const child = await api.fork(body);
      hooks.showRun(child, { select: position });
    } catch (err) {
      controls.showError(err.message || String(err));
    } finally {
      controls.setBusy(false);
    }
  }

  /** A click on a chart item; returns true when it was a candidate bar (and forks). */
  const chartClick = (p, built) => {
    if (!FORKABLE_VIEWS.has(built.view) || p?.data?.tokenId == null) return false;
    const run = hooks.getRun();
    const position = Number(built.meta?.position);
    if (!run || !Number.isInteger(position) || position <= 0) return false;
    if (Number(built.meta['chosen-id']) === p.data.tokenId) return true; // already this token
    fork(run, position, p.data.tokenId);
    return true;
  };

  // ---------- branch tree ----------
  async function switchTo(runId) {
    const run = hooks.getRun();
    if (run && run.run_id === runId) return;
    controls.clearError();
    try {
      const next = await api.run(runId);
      hooks.showRun(next, next.kind === 'fork' ? { select: next.fork_position } : {});
    } catch (err) {
      controls.showError(err.message || String(err));
    }
  }

  $('fork-tree').addEventListener('click', (ev) => {
    const cmp = ev.target.closest('[data-testid="compare-parent"]');
    if (cmp) {
      const m = metas.get(cmp.dataset.branchId);
      if (!m) return;
      diffPair = { a: m.parent_id, b: m.run_id };
      fillDiffSelects();
      hooks.setView('diff');
      return;
    }
    const btn = ev.target.closest('[data-testid="branch"]');
    if (btn) switchTo(btn.dataset.runId);
  });

  // ---------- views ----------
  const loaders = {
    async sampler(run, ctx) {
      const pos = ctx.selected;
      if (pos == null || pos <= 0) {
        $('sampler-cut').textContent = '';
        return { message: t('view.pickToken') };
      }
      const data = await api.tokenProbs(run.run_id, pos, samplerTopN);
      $('sampler-cut').textContent = samplerNote(data, t);
      const forced = run.kind === 'fork' && pos === run.fork_position;
      return buildSamplerOption(data, run.params, { ...ctx, forced });
    },
    async diff(run, ctx) {
      const panel = $('diff-tokens');
      const { a, b } = diffPair;
      if (metas.size < 2 || !a || !b) {
        panel.replaceChildren();
        return { message: t('diff.needTwo') };
      }
      if (a === b) {
        panel.replaceChildren();
        return { message: t('diff.sameRun') };
      }
      const seq = ++diffSeq;
      let data;
      try {
        data = await api.diff(a, b);
      } catch (err) {
        if (seq === diffSeq) panel.replaceChildren();
        throw err;
      }
      if (seq === diffSeq) {
        const labels = {
          a: metas.has(a) ? `#${metas.get(a).order}` : '',
          b: metas.has(b) ? `#${metas.get(b).order}` : '',
        };
        const { divergenceColumn } = renderDiffTokens(panel, data, { t, labels });
        if (divergenceColumn) {
          const grid = divergenceColumn.parentElement;
          grid.scrollLeft = Math.max(0, divergenceColumn.offsetLeft - grid.clientWidth / 3);
        }
      }
      return buildDiffOption(data, ctx);
    },
  };

  $('sampler-topn').addEventListener('change', (ev) => {
    samplerTopN = Number(ev.target.value);
    hooks.refreshView();
  });
  for (const [id, key] of [['diff-a', 'a'], ['diff-b', 'b']]) {
    $(id).addEventListener('change', (ev) => { diffPair[key] = ev.target.value; hooks.refreshView(); });
  }
  $('diff-swap').addEventListener('click', () => {
    diffPair = { a: $('diff-b').value, b: $('diff-a').value };
    fillDiffSelects();
    hooks.refreshView();
  });

  // ---------- score text ----------
  const setMode = (next) => {
    mode = next;
    $('gen-form').classList.toggle('mode-score', mode === 'score');
    for (const btn of doc.querySelectorAll('.mode-btn')) {
      const on = btn.dataset.mode === mode;
      btn.classList.toggle('active', on);
      btn.setAttribute('aria-selected', on ? 'true' : 'false');
    }
    doc.body.dataset.mode = mode;
    controls.clearError();
  };
  for (const btn of doc.querySelectorAll('.mode-btn')) {
    btn.addEventListener('click', () => setMode(btn.dataset.mode));
  }

  async function scoreText() {
    if (doc.body.dataset.busy === 'true') return;
    controls.clearError();
    const text = $('score-text').value;
    if (!text.trim()) {
      controls.showError(t('err.emptyScoreText'));
      return;
    }
    controls.setBusy(true);
    $('score-submit').disabled = true;
    $('score-busy').hidden = false;
    try {
      const run = await api.score({ text, use_chat_template: $('score-chat-template').checked });
      const metric = $('metric-select');
      if (metric.value !== 'gltr') {
        metric.value = 'gltr';
        metric.dispatchEvent(new Event('change'));
      }
      hooks.showRun(run, {});
    } catch (err) {
      controls.showError(err.message || String(err));
    } finally {
      controls.setBusy(false);
      $('score-submit').disabled = false;
      $('score-busy').hidden = true;
    }
  }
  $('score-submit').addEventListener('click', scoreText);
  $('score-text').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      scoreText();
    }
  });

  const applyLanguage = () => {
    renderTree();
    fillDiffSelects();
    const run = hooks.getRun();
    renderScoreSummary($('score-summary'), run, { t });
  };

  setMode('generate');
  return {
    stream,
    get streaming() { return active !== null; },
    get mode() { return mode; },
    onRun,
    chartClick,
    loaders,
    applyLanguage,
    metas,
    pngDetail: (view, selected) => ({ sampler: `pos${selected}`, diff: 'kl' }[view]),
    /** The top-bar summary for runs the generic one does not fit (scored text), else null. */
    summary: (run) => (run.kind === 'score' && run.score
      ? t('run.summaryScore', { n: run.score.num_scored, ppl: fmtPerplexity(run.score.perplexity) })
      : null),
  };
}
