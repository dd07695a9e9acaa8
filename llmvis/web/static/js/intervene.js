// Interventions (issue 15) as one registry feature: ablating heads picked in the Heads grid (or
// a layer's MLP / attention), the Effect view of an intervention run against its parent, the
// activation-patching sweep (a job with progress and Stop) and steering with a small alpha
// sweep. Its state lives in the store (ablateHeads, headsPick, ablateMode, ablateTarget,
// ablateLayer, patchForm, patchStart, patchResult, steerForm, steerResult); controls write to
// the store and are drawn from it. Token text only ever goes in with textContent.

import { newJobId } from './insights.js';
import { withRun } from './interactive.js';
import { option } from './util.js';
import {
  ablateBody, buildEffectOption, buildPatchOption, buildSteerOption, effectClickPosition,
  effectFromApi, headsText, kvGroupOf, mostAffected, parseAlphas, patchBody, patchFromApi, patchProblem, promptLines,
  renderAffected, renderSteerColumns, steerBody,
} from './views/intervene.js';

const PATCH_POLL_MS = 400;
const COUNT_DEBOUNCE_MS = 250;

/** The file-name detail of a saved Effect / Patch / Steer chart, else undefined. Pure. */
export function interveneExportDetail(view, s) {
  if (view === 'effect') return `run-${(s.run?.run_id ?? '').slice(0, 8)}`;
  if (view === 'patch') return s.patchResult ? s.patchResult.result.sweep : 'none';
  if (view === 'steer') return s.steerResult ? `L${s.steerResult.layer}` : 'none';
  return undefined;
}

/**
 * Which intervention run the Effect view shows: the run on show when it is one, else the diff's
 * B run when that is one, else null. Pure.
 */
export function effectRunId(state) {
  if (state.run?.kind === 'intervention') return state.run.run_id;
  const b = state.diffB && state.sessionRuns.get(state.diffB);
  return b && b.kind === 'intervention' ? b.run_id : null;
}

/** page: {doc, api, t, store, select, showRun, showError, clearError}. */
export function createIntervene({ doc, api, t, store, select, showRun, showError, clearError }) {
  const $ = (id) => doc.getElementById(id);
  const effectsCache = new Map(); // run_id -> effects answer (inline in the ablate / steer answers)
  let patchJob = null; // the sweep in flight: {seq, jobId, promise, stopped}; a handle, not state
  let lastEffect = null; // {runId, positions}: to map a clicked position to the run on show
  let stoppedSeq = 0; // the sweep request last stopped: it is not restarted by a redraw, only by Start

  const refuseWhileBusy = () => {
    if (!store.get().busy) return false;
    showError(t('err.busyRun'));
    return true;
  };
  const register = (run) => store.set((s) => ({ sessionRuns: withRun(s.sessionRuns, run) }));

  // ---------- ablation (the Heads grid's bar) ----------
  const renderAblate = (s) => {
    const n = s.ablateHeads.length;
    $('ablate-count').textContent = t('ablate.count', { n });
    $('ablate-count').dataset.count = String(n);
    $('ablate-heads-list').textContent = n ? headsText(s.ablateHeads) : '';
    $('ablate-clear').disabled = n === 0;
    $('ablate-pick').setAttribute('aria-pressed', s.headsPick ? 'true' : 'false');
    $('ablate-pick').classList.toggle('active', s.headsPick);
    $('ablate-mode').value = s.ablateMode;
    $('ablate-target').value = s.ablateTarget;
    $('ablate-layer').value = String(s.ablateLayer);
    $('ablate-free').checked = s.ablateFree;
    $('ablate-layer').hidden = s.ablateTarget === 'heads';
    $('ablate-bar').classList.toggle('off', s.headsMode !== 'grid');
    const ready = s.run && (s.ablateTarget !== 'heads' || n > 0);
    $('ablate-run').disabled = !ready || s.busy === 'intervene';
    $('ablate-busy').hidden = s.busy !== 'intervene';
  };

  const fillLayers = () => {
    const m = store.get().model;
    if (!m) return;
    $('ablate-layer').replaceChildren(...Array.from({ length: m.num_layers }, (_, l) => option(doc, l, t('layer.n', { l }))));
    $('steer-layer').replaceChildren(...Array.from({ length: m.num_layers }, (_, l) => option(doc, l, t('layer.n', { l }))));
    $('ablate-target').replaceChildren(
      option(doc, 'heads', t('ablate.target.heads')),
      option(doc, 'mlp', t('ablate.target.mlp')),
      option(doc, 'attention', t('ablate.target.attention')),
    );
    $('ablate-mode').replaceChildren(option(doc, 'zero', t('ablate.mode.zero')), option(doc, 'mean', t('ablate.mode.mean')));
    const s = store.get();
    if (s.steerForm.layer == null) store.set({ steerForm: { ...s.steerForm, layer: Math.round(m.num_layers / 2) } });
    renderAblate(store.get());
    renderSteerForm(store.get());
  };

  async function ablate() {
    if (refuseWhileBusy()) return;
    clearError();
    const s = store.get();
    if (!s.run) return;
    const { body, error } = ablateBody(s.run.run_id, {
      target: s.ablateTarget, heads: s.ablateHeads, kvGroup: kvGroupOf(s.model), layer: s.ablateLayer,
      mode: s.ablateMode, numLayers: s.model?.num_layers, free: s.ablateFree,
    });
    if (error) { showError(t(error)); return; }
    store.set({ busy: 'intervene' });
    try {
      const answer = await api.ablate(body);
      effectsCache.set(answer.run.run_id, answer.effects);
      showRun(answer.run); // joins the branch tree (linked to its parent) and the diff pair
      store.set({ view: 'effect' });
    } catch (err) {
      showError(err.message || String(err));
    } finally {
      store.set({ busy: null });
    }
  }

  $('ablate-pick').addEventListener('click', () => store.set((s) => ({ headsPick: !s.headsPick })));
  $('ablate-clear').addEventListener('click', () => store.set({ ablateHeads: [] }));
  $('ablate-mode').addEventListener('change', (ev) => store.set({ ablateMode: ev.target.value }));
  $('ablate-target').addEventListener('change', (ev) => store.set({ ablateTarget: ev.target.value }));
  $('ablate-layer').addEventListener('change', (ev) => store.set({ ablateLayer: Number(ev.target.value) }));
  $('ablate-free').addEventListener('change', (ev) => store.set({ ablateFree: ev.target.checked }));
  $('ablate-run').addEventListener('click', ablate);

  // ---------- effect ----------
  const effectPanel = $('effect-top');
  effectPanel.addEventListener('click', (ev) => {
    const btn = ev.target.closest('[data-testid="effect-pos"]');
    if (!btn) return;
    const pos = Number(btn.dataset.position);
    const { run } = store.get();
    if (!run || !lastEffect) return;
    if (run.run_id === lastEffect.runId) { select(pos); return; }
    const row = lastEffect.positions.find((p) => p.position === pos);
    if (row && row.parent_position != null) select(row.parent_position);
  });

  async function loadEffects(runId) {
    if (effectsCache.has(runId)) return effectsCache.get(runId);
    const answer = await api.effects(runId, { top: 10 });
    effectsCache.set(runId, answer);
    return answer;
  }

  // ---------- patching ----------
  const countTimers = {};
  const countSeq = { clean: 0, corrupted: 0 };
  const recount = (which) => {
    clearTimeout(countTimers[which]);
    countTimers[which] = setTimeout(async () => {
      const seq = ++countSeq[which];
      const text = store.get().patchForm[which];
      const key = `${which}Count`;
      if (!text.trim()) {
        store.set((s) => ({ patchForm: { ...s.patchForm, [key]: null, [`${which}Tokens`]: [] } }));
        return;
      }
      try {
        const answer = await api.tokenize({ text });
        if (seq !== countSeq[which] || store.get().patchForm[which] !== text) return;
        store.set((s) => ({ patchForm: { ...s.patchForm, [key]: answer.count, [`${which}Tokens`]: answer.tokens.map((x) => x.text) } }));
      } catch (err) {
        if (seq !== countSeq[which]) return;
        store.set((s) => ({ patchForm: { ...s.patchForm, [key]: null } }));
        showError(err.message || String(err));
      }
    }, COUNT_DEBOUNCE_MS);
  };

  const PATCH_FIELDS = [
    // [element id, form key, parse]
    ['patch-clean', 'clean', String],
    ['patch-corrupted', 'corrupted', String],
    ['patch-metric', 'metric', String],
    ['patch-token-a', 'tokenA', String],
    ['patch-token-b', 'tokenB', String],
    ['patch-position', 'position', (v) => (String(v).trim() === '' ? NaN : Number(v))],
    ['patch-sweep', 'sweep', String],
    ['patch-head-position', 'headPosition', (v) => (v === 'all' || String(v).trim() === '' ? 'all' : Number(v))],
  ];
  for (const [id, key, parse] of PATCH_FIELDS) {
    const ev = $(id).tagName === 'SELECT' ? 'change' : 'input';
    $(id).addEventListener(ev, (e) => {
      store.set((s) => ({ patchForm: { ...s.patchForm, [key]: parse(e.target.value) } }));
      if (key === 'clean' || key === 'corrupted') {
        store.set((s) => ({ patchForm: { ...s.patchForm, [`${key}Count`]: undefined } }));
        recount(key);
      }
    });
  }
  const countText = (n) => (n === undefined ? t('patch.countPending') : n == null ? '—' : t('patch.tokens', { n }));
  const renderPatchForm = (s) => {
    const f = s.patchForm;
    for (const [id, key] of PATCH_FIELDS) {
      const node = $(id);
      const v = key === 'position' && Number.isNaN(f[key]) ? '' : String(f[key] ?? '');
      if (node.value !== v && doc.activeElement !== node) node.value = v;
    }
    $('patch-clean-count').textContent = countText(f.cleanCount);
    $('patch-corrupted-count').textContent = countText(f.corruptedCount);
    const mismatch = f.cleanCount != null && f.corruptedCount != null && f.cleanCount !== f.corruptedCount;
    $('patch-clean-count').classList.toggle('bad', mismatch);
    $('patch-corrupted-count').classList.toggle('bad', mismatch);
    const ctlOf = (id) => $(id).closest('.ctl') || $(id); // the control with its label
    ctlOf('patch-token-b').hidden = f.metric === 'logprob';
    ctlOf('patch-head-position').hidden = f.sweep !== 'heads';
    $('patch-start').disabled = Boolean(patchJob);
  };
  const patchMessage = (text, bad = false) => {
    $('patch-message').textContent = text;
    $('patch-message').classList.toggle('bad', bad);
  };

  const startPatch = () => {
    const s = store.get();
    const f = s.patchForm;
    if (f.cleanCount === undefined || f.corruptedCount === undefined) {
      patchMessage(t('patch.counting'), true);
      return;
    }
    const problem = patchProblem({
      clean: f.clean, corrupted: f.corrupted, cleanCount: f.cleanCount, corruptedCount: f.corruptedCount,
      metric: f.metric, tokenA: f.tokenA, tokenB: f.tokenB, position: f.position, sweep: f.sweep, headPosition: f.headPosition,
    });
    if (problem) {
      patchMessage(t(problem.key, problem.vars), true);
      return;
    }
    if (!s.run) { patchMessage(t('patch.needRun'), true); return; }
    patchMessage('');
    clearError();
    store.set((st) => ({ patchStart: st.patchStart + 1, view: 'patch' }));
  };
  $('patch-start').addEventListener('click', startPatch);
  $('patch-swap').addEventListener('click', () => {
    store.set((s) => ({
      patchForm: {
        ...s.patchForm, clean: s.patchForm.corrupted, corrupted: s.patchForm.clean,
        cleanCount: s.patchForm.corruptedCount, corruptedCount: s.patchForm.cleanCount,
        cleanTokens: s.patchForm.corruptedTokens, corruptedTokens: s.patchForm.cleanTokens,
      },
    }));
  });

  /** Start the sweep of request `seq` (once), or return the one in flight. */
  const ensurePatchJob = (seq) => {
    if (patchJob && patchJob.seq === seq) return patchJob;
    const f = store.get().patchForm;
    const jobId = newJobId();
    const job = { seq, jobId, stopped: false, done: 0, total: 0 };
    job.promise = api.patch(patchBody({ ...f, jobId })).finally(() => {
      if (patchJob === job) patchJob = null;
      renderPatchForm(store.get());
    });
    job.promise.catch(() => {});
    patchJob = job;
    renderPatchForm(store.get());
    return job;
  };

  async function loadPatch(run, ctx) {
    const s = ctx.state;
    if (!s.patchStart) return { message: t('patch.intro') };
    if (s.patchResult && s.patchResult.seq === s.patchStart) return buildPatchOption(s.patchResult.result, ctx);
    if (stoppedSeq === s.patchStart) return { message: t('patch.stopped'), stopped: true };
    const job = ensurePatchJob(s.patchStart);
    ctx.progress?.({ text: t('patch.running', { sweep: t(`patch.sweep.${s.patchForm.sweep === 'heads' ? 'heads' : 'residual'}`) }) });
    const stop = new Promise((resolve) => {
      ctx.onStop?.(() => {
        job.stopped = true;
        api.cancel(job.jobId).catch(() => {}); // the patch request then answers 409
        resolve(null);
      });
    });
    const follow = async () => {
      try {
        const p = await api.job(job.jobId);
        if (!job.stopped) ctx.progress?.({ done: p.done, total: p.total });
      } catch { /* not started yet, or already done */ }
    };
    const poll = setInterval(follow, PATCH_POLL_MS);
    ctx.signal?.addEventListener('abort', () => {
      clearInterval(poll);
      if (store.get().view !== 'patch') { job.stopped = true; api.cancel(job.jobId).catch(() => {}); }
    }, { once: true });
    const stoppedMessage = () => {
      stoppedSeq = job.seq;
      store.set({ patchResult: null });
      return { message: t('patch.stopped'), stopped: true };
    };
    try {
      const answer = await Promise.race([job.promise, stop]);
      if (job.stopped || answer === null) return stoppedMessage();
      const result = patchFromApi(answer, t);
      store.set({ patchResult: { seq: job.seq, result } });
      return buildPatchOption(result, ctx);
    } catch (err) {
      if (job.stopped || (err?.status === 409 && /cancel/i.test(err.message))) return stoppedMessage();
      store.set({ patchStart: 0 }); // the page does not retry a refused sweep by itself
      patchMessage(err.message || String(err), true);
      throw err;
    } finally {
      clearInterval(poll);
    }
  }

  // ---------- steering ----------
  const STEER_FIELDS = [
    ['steer-layer', 'layer', Number],
    ['steer-source', 'source', String],
    ['steer-positive', 'positive', String],
    ['steer-negative', 'negative', String],
    ['steer-token', 'token', String],
    ['steer-direction', 'direction', String],
    ['steer-alphas', 'alphas', String],
    ['steer-from', 'from', String],
  ];
  for (const [id, key, parse] of STEER_FIELDS) {
    const ev = $(id).tagName === 'SELECT' ? 'change' : 'input';
    $(id).addEventListener(ev, (e) => store.set((s) => ({ steerForm: { ...s.steerForm, [key]: parse(e.target.value) } })));
  }
  const renderSteerForm = (s) => {
    const f = s.steerForm;
    for (const [id, key] of STEER_FIELDS) {
      const node = $(id);
      const v = String(f[key] ?? '');
      if (node.value !== v && doc.activeElement !== node) node.value = v;
    }
    for (const node of doc.querySelectorAll('[data-steer-source]')) node.hidden = node.dataset.steerSource !== f.source;
    $('steer-start').disabled = s.busy === 'intervene' || !s.run;
    $('steer-busy').hidden = s.busy !== 'intervene';
  };

  async function steer() {
    if (refuseWhileBusy()) return;
    clearError();
    const s = store.get();
    if (!s.run) return;
    const f = s.steerForm;
    const parsed = parseAlphas(f.alphas);
    if (parsed.error) { showError(t(parsed.error)); return; }
    let direction = null;
    if (f.source === 'direction') {
      direction = String(f.direction).split(/[\s,;]+/).filter(Boolean).map(Number);
      if (direction.some((v) => !Number.isFinite(v))) { showError(t('steer.badDirection')); return; }
    }
    const from = String(f.from ?? '').trim();
    if (from !== '' && !/^\d+$/.test(from)) { showError(t('steer.badFrom')); return; }
    const { body, error } = steerBody(s.run.run_id, {
      layer: f.layer, source: f.source, positive: promptLines(f.positive), negative: promptLines(f.negative),
      token: f.token, direction, alphas: parsed.alphas, fromPosition: from === '' ? null : Number(from),
    });
    if (error) { showError(t(error)); return; }
    store.set({ busy: 'intervene' });
    try {
      const answer = await api.steer(body);
      const items = answer.results.map((r) => {
        effectsCache.set(r.run.run_id, r.effects);
        register(r.run); // every steered run joins the branch tree, linked to the parent
        const gen = r.run.tokens.filter((x) => x.source === 'generated').map((x) => x.text).join('');
        return {
          alpha: r.alpha, runId: r.run.run_id, text: gen, divergence: r.effects.divergence_position ?? null,
          effect: effectFromApi(r.effects, t),
        };
      });
      store.set({ steerResult: { parentId: s.run.run_id, layer: f.layer, norm: answer.vector?.norm ?? null, items }, view: 'steer' });
    } catch (err) {
      showError(err.message || String(err));
    } finally {
      store.set({ busy: null });
    }
  }
  $('steer-start').addEventListener('click', steer);
  $('steer-runs').addEventListener('click', (ev) => {
    const btn = ev.target.closest('[data-testid="steer-open"]');
    if (!btn || refuseWhileBusy()) return;
    api.run(btn.dataset.runId).then((run) => showRun(run)).catch((err) => showError(err.message || String(err)));
  });

  // ---------- store -> page ----------
  store.subscribe((s, prev, changed) => {
    if (['ablateHeads', 'headsPick', 'ablateMode', 'ablateTarget', 'ablateLayer', 'ablateFree', 'headsMode', 'busy', 'run'].some((k) => changed.has(k))) renderAblate(s);
    if (changed.has('patchForm')) renderPatchForm(s);
    if (changed.has('view') && s.view === 'patch') {
      // the editors' first counts, once the tab is opened
      if (s.patchForm.cleanCount === undefined) recount('clean');
      if (s.patchForm.corruptedCount === undefined) recount('corrupted');
    }
    if (changed.has('steerForm') || changed.has('busy') || changed.has('run')) renderSteerForm(s);
    if (changed.has('model') && s.model && prev.model?.name !== s.model.name) store.set({ ablateHeads: [] });
  });
  renderPatchForm(store.get());

  return {
    name: 'intervene',
    watch: ['ablateHeads', 'headsPick', 'patchStart', 'steerResult'],
    loaders: {
      async effect(run, ctx) {
        const id = effectRunId(ctx.state);
        if (!id) {
          effectPanel.replaceChildren();
          return { message: t('effect.needRun') };
        }
        const answer = await loadEffects(id);
        lastEffect = { runId: id, positions: answer.positions || [] };
        const effect = effectFromApi(answer, t);
        const top = mostAffected(effect.rows, 10);
        renderAffected(effectPanel, top, { t, tokens: effect.tokens, doc });
        const built = buildEffectOption(effect, { ...ctx, selected: id === run.run_id ? ctx.selected : null });
        return { ...built, meta: { ...built.meta, 'effect-run': id } };
      },
      patch: loadPatch,
      async steer(run, ctx) {
        const r = ctx.state.steerResult;
        if (!r) {
          $('steer-runs').replaceChildren();
          return { message: t('steer.intro') };
        }
        renderSteerColumns($('steer-runs'), r.items, { t, doc });
        const built = buildSteerOption(r.items, ctx);
        const norm = r.norm != null ? ` · ${t('steer.norm', { norm: r.norm.toFixed(2) })}` : '';
        return { ...built, caption: built.caption + norm };
      },
    },
    onChartClick(p, shown, ctx) {
      if (shown.view === 'effect') {
        const pos = effectClickPosition(p);
        if (pos == null || !lastEffect) return false;
        const { run } = store.get();
        if (run?.run_id === lastEffect.runId) ctx.select(pos);
        return true;
      }
      return false;
    },
    exportDetail: interveneExportDetail,
    onModel: fillLayers,
    onLanguage: () => {
      fillLayers();
      renderAblate(store.get());
      renderPatchForm(store.get());
    },
  };
}
