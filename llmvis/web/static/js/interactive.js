// Making runs, as one registry feature: generation streamed token by token with Stop, forks from
// any candidate bar with their branch tree, the run diff, the sampler view and the Score text
// mode. Its state lives in the store (mode, busy, streaming, stopping, sessionRuns, diffA,
// diffB, samplerTopN, scoreText, scoreTemplate); it draws its controls from the store and puts
// finished runs on show through page.showRun.

import { buildPayload, samplingSettings } from './controls.js';
import { renderForkTree, runLabel, runMeta, treeRows } from './forktree.js';
import { renderScoreSummary } from './score.js';
import { partialRun } from './stream.js';
import { option } from './util.js';
import { buildDiffOption, renderDiffTokens } from './views/diff.js';
import { buildSamplerOption, paramsText, samplerNote } from './views/sampler.js';

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

/** The session's runs for the diff pickers, newest first. Pure. */
export function runsNewestFirst(metas) {
  return [...metas.values()].sort((x, y) => y.order - x.order);
}

/**
 * A diff pair the pickers can show: each side that is not a known run falls back to the newest
 * run (what a <select> shows first), or null when there are none. Pure.
 */
export function validDiffPair(metas, pair) {
  const first = runsNewestFirst(metas)[0]?.run_id ?? null;
  const ok = (id) => (id && metas.has(id) ? id : first);
  return { a: ok(pair.a), b: ok(pair.b) };
}

/**
 * The session's runs with `run` added. Runs are numbered by creation time (the run's `created`;
 * a run without one counts as made when first seen), so #1 root / #2 fork stay so whichever
 * of them was opened first. Pure.
 */
export function withRun(metas, run) {
  const next = new Map(metas);
  const prev = metas.get(run.run_id);
  const seen = prev ? prev.seen : metas.size + 1;
  const meta = runMeta(run, 0);
  next.set(run.run_id, { ...meta, created: meta.created ?? prev?.created ?? null, seen });
  const ranked = [...next.values()].sort((x, y) => {
    if (x.created != null && y.created != null && x.created !== y.created) return x.created - y.created;
    return x.seen - y.seen;
  });
  ranked.forEach((m, i) => next.set(m.run_id, { ...m, order: i + 1 }));
  return next;
}

/** The fork request: the forced token and the form's (validated) sampling settings. Pure. */
export function forkBody(run, position, tokenId, settings) {
  return { run_id: run.run_id, position, token_id: tokenId, ...settings };
}

/** page: {doc, api, i18n, store, conversation, showRun, showError, clearError}. */
export function createInteractive({ doc, api, i18n, store, conversation, showRun, showError, clearError }) {
  const $ = (id) => doc.getElementById(id);
  const { t } = i18n;
  const conv = $('conversation');
  let active = null; // the stream in flight: {controller, runId, stopped}; a handle, not state
  let diffSeq = 0; // answers to older diff requests are dropped

  // ---------- session runs ----------
  const register = (run) => store.set((s) => ({ sessionRuns: withRun(s.sessionRuns, run) }));

  const renderTree = () => {
    const root = $('fork-tree');
    const { run, sessionRuns } = store.get();
    const rows = run ? treeRows(sessionRuns, run.run_id) : [];
    root.hidden = rows.length < 2;
    if (rows.length < 2) { root.replaceChildren(); return; }
    renderForkTree(root, rows, { t, currentId: run.run_id });
  };

  const renderDiffSelects = () => {
    const { sessionRuns, diffA, diffB } = store.get();
    const list = runsNewestFirst(sessionRuns);
    for (const [id, value] of [['diff-a', diffA], ['diff-b', diffB]]) {
      const sel = $(id);
      sel.replaceChildren(...list.map((m) => option(doc, m.run_id, runLabel(m, t))));
      if (value) sel.value = value;
    }
  };

  /** Set the diff pair, kept to runs the pickers can show. */
  const setDiffPair = (pair) => {
    const { a, b } = validDiffPair(store.get().sessionRuns, pair);
    store.set({ diffA: a, diffB: b });
  };

  /** The registry's run hook: a run is on show (generated, streamed, forked, scored, switched). */
  const onRun = (run) => {
    register(run);
    // Parents we have not seen (a run loaded from elsewhere) are fetched once so the tree and
    // the default diff know them.
    if (run.parent_id && !store.get().sessionRuns.has(run.parent_id)) {
      api.run(run.parent_id).then((parent) => {
        if (!store.get().sessionRuns.has(parent.run_id)) register(parent);
      }).catch(() => {});
    }
    setDiffPair(defaultDiffPair(store.get().sessionRuns, run.run_id));
    renderScoreSummary($('score-summary'), run, { t });
  };

  // ---------- streaming ----------
  /**
   * Generate with streaming. Once the server accepted the request the old run leaves the page
   * and chips appear token by token. Resolves with the finished run (also when stopped: the
   * server answers `done` with status "cancelled"), or null when the fetch was aborted.
   */
  async function stream(call, payload) {
    const controller = new AbortController();
    const job = { controller, runId: null, stopped: false };
    active = job;
    let start = null;
    let tokens = [];
    let timer = 0;
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
        conv.dataset.streamed = '0';  // the count is this run's, not the one on show before
        store.set({ streaming: true, stopping: false, run: null, selected: null });
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
      return await call(payload, { signal: controller.signal, onEvent });
    } catch (err) {
      if (err?.name === 'AbortError') return null;
      throw err;
    } finally {
      clearTimeout(timer);
      if (active === job) active = null;
      store.set({ streaming: false, stopping: false });
    }
  }

  function cancel(job) {
    job.stopped = true;
    store.set({ stopping: true });
    if (!job.runId) { job.controller.abort(); return; }
    api.cancel(job.runId).catch((err) => {
      // The run may have just finished, or the server may be gone: stop reading either way.
      if (err?.status !== 404) job.controller.abort();
    });
  }

  /**
   * The rule for actions during a run: while one generates, forks or scores (state.busy), every
   * other action that would make or show a run (generate, fork, score, open from the history or
   * the branch tree, import, diff with parent) is refused with a visible reason in the error
   * line, and its controls say so; Stop is the way out. Returns true when refused.
   */
  const refuseWhileBusy = () => {
    if (!store.get().busy) return false;
    showError(t('err.busyRun'));
    return true;
  };
  const maxNew = () => store.get().model?.limits?.max_new_tokens ?? null;

  async function generate() {
    if (refuseWhileBusy()) return; // Ctrl+Enter while a run streams
    clearError();
    const { payload, error } = buildPayload(store.get().form, t, { maxNew: maxNew() });
    if (error) {
      showError(error);
      return;
    }
    store.set({ busy: 'generate' });
    try {
      // Streamed: chips appear token by token; the views fill in from the finished run.
      const run = await stream(api.generateStream, payload);
      if (run) showRun(run);
    } catch (err) {
      showError(err.message || String(err));
    } finally {
      store.set({ busy: null });
    }
  }

  $('gen-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    generate();
  });
  $('prompt').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      generate();
    }
  });
  $('stop').addEventListener('click', () => { if (active) cancel(active); });
  // Leaving or reloading the page closes the stream; the server then cancels the run.
  doc.defaultView.addEventListener('pagehide', () => { if (active) active.controller.abort(); });

  // ---------- fork ----------
  async function fork(run, position, tokenId) {
    if (refuseWhileBusy()) return;
    clearError();
    const { settings, error } = samplingSettings(store.get().form, t, { maxNew: maxNew() });
    if (error) {
      showError(error);
      return;
    }
    store.set({ busy: 'fork' });
    try {
      // Streamed like a generation (Stop works once the server named the run).
      const child = await stream(api.forkStream, forkBody(run, position, tokenId, settings));
      if (child) showRun(child, { select: position });
    } catch (err) {
      showError(err.message || String(err));
    } finally {
      store.set({ busy: null });
    }
  }

  /** A click on a chart item; true when it was a candidate bar (and forks). */
  const onChartClick = (p, shown) => {
    if (!FORKABLE_VIEWS.has(shown.view) || p?.data?.tokenId == null) return false;
    const { run } = store.get();
    const position = Number(shown.meta?.position);
    if (!run || !Number.isInteger(position) || position <= 0) return false;
    if (Number(shown.meta['chosen-id']) === p.data.tokenId) return true; // already this token
    fork(run, position, p.data.tokenId);
    return true;
  };

  // ---------- branch tree ----------
  async function switchTo(runId) {
    const { run } = store.get();
    if (run && run.run_id === runId) return;
    if (refuseWhileBusy()) return;
    clearError();
    try {
      const next = await api.run(runId);
      showRun(next, next.kind === 'fork' ? { select: next.fork_position } : {});
    } catch (err) {
      showError(err.message || String(err));
    }
  }

  $('fork-tree').addEventListener('click', (ev) => {
    const cmp = ev.target.closest('[data-testid="compare-parent"]');
    if (cmp) {
      if (refuseWhileBusy()) return;
      const m = store.get().sessionRuns.get(cmp.dataset.branchId);
      if (!m) return;
      setDiffPair({ a: m.parent_id, b: m.run_id });
      store.set({ view: 'diff' });
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
      const data = await api.tokenProbs(run.run_id, pos, ctx.state.samplerTopN);
      $('sampler-cut').textContent = samplerNote(data, t, run.params);
      const forced = run.kind === 'fork' && pos === run.fork_position;
      return buildSamplerOption(data, run.params, { ...ctx, forced });
    },
    async diff(run, ctx) {
      const panel = $('diff-tokens');
      const { sessionRuns: metas, diffA: a, diffB: b, diffAlign: align } = ctx.state;
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
        data = await api.diff(a, b, { align: align === 'position' ? undefined : align }); // alignment: issue 15
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

  $('sampler-topn').addEventListener('change', (ev) => store.set({ samplerTopN: Number(ev.target.value) }));
  $('diff-a').addEventListener('change', (ev) => store.set({ diffA: ev.target.value }));
  $('diff-b').addEventListener('change', (ev) => store.set({ diffB: ev.target.value }));
  $('diff-align')?.addEventListener('change', (ev) => store.set({ diffAlign: ev.target.value }));
  $('diff-swap').addEventListener('click', () => {
    const { diffA, diffB } = store.get();
    setDiffPair({ a: diffB, b: diffA });
  });

  // ---------- score text ----------
  const renderMode = (mode) => {
    $('gen-form').classList.toggle('mode-score', mode === 'score');
    for (const btn of doc.querySelectorAll('.mode-btn')) {
      const on = btn.dataset.mode === mode;
      btn.classList.toggle('active', on);
      btn.setAttribute('aria-selected', on ? 'true' : 'false');
    }
    doc.body.dataset.mode = mode; // a render of state.mode for CSS; never read
  };
  for (const btn of doc.querySelectorAll('.mode-btn')) {
    btn.addEventListener('click', () => {
      store.set({ mode: btn.dataset.mode });
      clearError();
    });
  }
  $('score-text').addEventListener('input', (ev) => store.set({ scoreText: ev.target.value }));
  $('score-chat-template').addEventListener('change', (ev) => store.set({ scoreTemplate: ev.target.checked }));

  async function scoreText() {
    if (refuseWhileBusy()) return;
    clearError();
    const { scoreText: text, scoreTemplate } = store.get();
    if (!text.trim()) {
      showError(t('err.emptyScoreText'));
      return;
    }
    store.set({ busy: 'score' });
    try {
      const run = await api.score({ text, use_chat_template: scoreTemplate });
      store.set({ metric: 'gltr' }); // a scored text is coloured by its GLTR rank buckets
      showRun(run, {});
    } catch (err) {
      showError(err.message || String(err));
    } finally {
      store.set({ busy: null });
    }
  }
  $('score-submit').addEventListener('click', scoreText);
  $('score-text').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      scoreText();
    }
  });

  // ---------- renders of the store ----------
  const renderStreaming = (s) => {
    conv.dataset.streaming = s.streaming ? 'true' : 'false';
    $('stop').hidden = !s.streaming;
    $('stop').disabled = s.stopping;
  };
  const renderBusy = (busy) => {
    // Not disabled while another run streams: a click then says why it waits (refuseWhileBusy).
    $('score-submit').disabled = busy === 'score';
    $('score-submit').setAttribute('aria-disabled', busy ? 'true' : 'false');
    $('score-submit').title = busy && busy !== 'score' ? t('err.busyRun') : '';
    $('score-busy').hidden = busy !== 'score';
  };

  // The settings a fork will use, shown before the click: the form's, validated.
  const forkHint = doc.createElement('span');
  forkHint.className = 'tool-note tool-hint';
  forkHint.dataset.testid = 'fork-settings';
  const renderForkHint = () => {
    const { settings, error } = samplingSettings(store.get().form || {}, t, { maxNew: maxNew() });
    forkHint.textContent = error
      ? error
      : t('sampler.forkWith', { params: `${paramsText(settings, t)} · ${t('sampling.maxNewTokens')} ${settings.max_new_tokens}` });
  };
  const samplerHint = $('sampler-cut').parentElement?.querySelector('[data-i18n="sampler.note"]');
  if (samplerHint) samplerHint.hidden = true; // replaced by the hint that names the settings
  const placeForkHint = (view) => {
    const group = view === 'probs' ? $('cut-mass')?.parentElement : view === 'sampler' ? $('sampler-cut').parentElement : null;
    if (group && forkHint.parentElement !== group) group.append(forkHint);
  };
  store.subscribe((s, prev, changed) => {
    if (changed.has('mode')) renderMode(s.mode);
    if (changed.has('busy')) renderBusy(s.busy);
    if (changed.has('streaming') || changed.has('stopping')) renderStreaming(s);
    if (changed.has('sessionRuns') || (changed.has('run') && s.run)) renderTree();
    if (changed.has('sessionRuns') || changed.has('diffA') || changed.has('diffB')) renderDiffSelects();
    if (changed.has('samplerTopN')) $('sampler-topn').value = String(s.samplerTopN);
    // A reopened scored run puts its text back (keep.js restores it into the store).
    if (changed.has('scoreText') && $('score-text').value !== s.scoreText) $('score-text').value = s.scoreText;
    if (changed.has('scoreTemplate')) $('score-chat-template').checked = s.scoreTemplate;
    if (changed.has('form') || changed.has('model')) renderForkHint();
    if (changed.has('view')) placeForkHint(s.view);
  });
  renderMode(store.get().mode);
  renderForkHint();
  placeForkHint(store.get().view);
  store.set({ scoreText: $('score-text').value, scoreTemplate: $('score-chat-template').checked });

  return {
    name: 'interactive',
    watch: ['samplerTopN', 'diffA', 'diffB', 'diffAlign'],
    loaders,
    onChartClick,
    exportDetail: (view, s) => ({ sampler: `pos${s.selected}`, diff: 'kl' }[view]),
    onRun,
    onLanguage: () => {
      renderForkHint();
      renderTree();
      renderDiffSelects();
      renderScoreSummary($('score-summary'), store.get().run, { t });
    },
  };
}
