// The Explain tab (issue 14) as one registry feature: why the selected token was predicted
// (rather than a contrast token). Three sub-views chosen by a segmented control: logit
// attribution to the embedding, every head and every MLP; input attribution over the earlier
// tokens (the conversation chips are shaded by it); the information-flow graph. Its settings
// (explainMode, explainTarget, explainContrast, explainMethod, explainSteps,
// explainThreshold), the candidates of the selected position and the clicked flow edge live in
// the store; the toolbar is drawn from them. It also adds "why this and not that?" to the
// Probabilities view. Token text is only ever set with textContent (or escaped in tooltips).

import { newJobId } from './insights.js';
import { headsText, kvGroupOf, toggleHead } from './views/intervene.js';
import { candidateLabel } from './tokens.js';
import { el, option } from './util.js';
import {
  EXPLAIN_MODES, INPUT_METHODS, JOB_METHODS, buildFlowOption, buildInputsOption, buildLogitOption,
  chipShades, explainExportDetail, explainParams, explainProblem, flowClickEdge, flowEdgeInfo, inputsLegend,
  logitCellToHead, parseSteps, runnerUp,
} from './views/explain.js';

/** Candidates listed in the target and contrast selects. */
export const CANDIDATES_N = 20;
const JOB_POLL_MS = 400;

/** The head a click on the logit chart opens ({layer, head}), or null. p: an ECharts click. Pure. */
export function logitClickHead(p) {
  if (p?.seriesId === 'logit-heat') return logitCellToHead(p.data);
  if (p?.seriesId === 'logit-top' && p.data && p.data.head != null && p.data.head >= 0) return { layer: p.data.layer, head: p.data.head };
  return null;
}

/**
 * The store patch that opens Explain with `contrastId` as the contrast at the selected position
 * ("why this and not that?" from the Probabilities view). Pure.
 */
export function whyNotPatch(contrastId) {
  return { view: 'explain', explainMode: 'logit', explainTarget: null, explainContrast: contrastId, explainEdge: null };
}

/**
 * Both selects' options ([{value, text}]) from a token_probs answer, for target `target` (null:
 * the token itself). The contrast list starts with "none", then the runner-up (the best
 * candidate other than the target). Pure.
 */
export function choices(data, target, t) {
  const tokenId = data.token.id;
  const targetId = target ?? tokenId;
  const label = (c) => `${candidateLabel(c, 16)}  ${c.prob != null ? `p=${c.prob.toFixed(3)}` : ''}`.trim();
  const targets = [{ value: '', text: t('explain.targetSelf', { tok: candidateLabel(data.token, 16) }) }];
  for (const c of data.candidates) if (c.id !== tokenId) targets.push({ value: String(c.id), text: label(c) });
  const ru = runnerUp(data.candidates, targetId);
  const contrasts = [{ value: '', text: t('explain.none') }];
  if (ru) contrasts.push({ value: String(ru.id), text: `${label(ru)} · ${t('explain.runnerUp')}` });
  for (const c of data.candidates) {
    if (c.id !== targetId && c.id !== ru?.id) contrasts.push({ value: String(c.id), text: label(c) });
  }
  if (targetId !== tokenId && !data.candidates.some((c) => c.id === tokenId)) {
    contrasts.push({ value: String(tokenId), text: candidateLabel(data.token, 16) });
  }
  return { targets, contrasts, runnerUpId: ru?.id ?? null, targetId };
}

/** The input-attribution request the state asks for (without a job id). Pure. */
export function inputsRequest(s) {
  const method = INPUT_METHODS.includes(s.explainMethod) ? s.explainMethod : 'grad_x_input';
  return {
    ...explainParams(s.run?.run_id, s.selected, s.explainTarget, s.explainContrast),
    method,
    steps: method === 'integrated_gradients' ? s.explainSteps : null,
  };
}

/** The key of the job the page on show wants, or null when it shows no job method. Pure. */
export function wantedJobKey(s) {
  if (s.view !== 'explain' || s.explainMode !== 'inputs' || !s.run) return null;
  const req = inputsRequest(s);
  return JOB_METHODS.includes(req.method) ? JSON.stringify(req) : null;
}

/** page: {doc, api, t, store, conversation, select}. */
export function createExplain({ doc, api, t, store }) {
  const $ = (id) => doc.getElementById(id);
  const conversationRoot = $('conversation');

  // ---------- the toolbar, drawn from the store ----------
  const renderMode = (s) => {
    const mode = s.explainMode;
    for (const b of doc.querySelectorAll('[data-explain-mode-btn]')) {
      const on = b.dataset.explainModeBtn === mode;
      b.classList.toggle('active', on);
      b.setAttribute('aria-pressed', on ? 'true' : 'false');
    }
    for (const node of doc.querySelectorAll('[data-explain-mode]')) {
      node.hidden = !node.dataset.explainMode.split(' ').includes(mode);
    }
    $('explain-steps-ctl').hidden = !(mode === 'inputs' && s.explainMethod === 'integrated_gradients');
  };

  const renderValues = (s) => {
    $('explain-method').value = s.explainMethod;
    $('explain-steps').value = String(s.explainSteps);
    $('explain-threshold').value = String(s.explainThreshold);
    $('explain-threshold-value').textContent = Number(s.explainThreshold).toFixed(2);
  };

  const fillMethods = () => {
    $('explain-method').replaceChildren(...INPUT_METHODS.map((m) => option(doc, m, t(`explain.method.${m}`))));
    $('explain-method').value = store.get().explainMethod;
  };

  const renderChoices = (s) => {
    const cands = s.explainCandidates;
    const ok = cands && s.run && cands.runId === s.run.run_id && cands.position === s.selected;
    const { targets, contrasts, runnerUpId } = ok ? choices(cands.data, s.explainTarget, t) : { targets: [], contrasts: [], runnerUpId: null };
    const tSel = $('explain-target');
    const cSel = $('explain-contrast');
    tSel.replaceChildren(...targets.map((o) => option(doc, o.value, o.text)));
    cSel.replaceChildren(...contrasts.map((o) => option(doc, o.value, o.text)));
    tSel.value = s.explainTarget == null ? '' : String(s.explainTarget);
    cSel.value = s.explainContrast == null ? '' : String(s.explainContrast);
    tSel.disabled = !ok;
    cSel.disabled = !ok;
    const ru = $('explain-runner-up');
    ru.disabled = runnerUpId == null || s.explainContrast === runnerUpId;
    ru.dataset.tokenId = runnerUpId == null ? '' : String(runnerUpId); // a render of state, for tests
  };

  const renderInfo = (s) => {
    const info = $('explain-info');
    if (s.explainMode === 'flow' && s.explainEdge) {
      const labels = s.labels.long;
      info.textContent = flowEdgeInfo(s.explainEdge, t, (j) => labels[j] ?? '');
      info.dataset.kind = s.explainEdge.kind;
      info.dataset.head = s.explainEdge.head == null ? '' : String(s.explainEdge.head);
    } else {
      info.textContent = s.explainMode === 'flow' ? t('explain.edgeHint') : s.explainMode === 'logit' ? t('explain.clickHead') : '';
      info.dataset.kind = '';
      info.dataset.head = '';
    }
  };

  // ---------- the conversation's chips, shaded by an input attribution ----------
  let shadedFor = null; // the run the chips are shaded for (a handle on the DOM, not state)
  const clearShades = () => {
    if (!shadedFor) return;
    shadedFor = null;
    delete conversationRoot.dataset.explainShaded;
    for (const chip of conversationRoot.querySelectorAll('[data-testid="token"][data-xp]')) {
      chip.removeAttribute('data-xp');
      chip.style.removeProperty('--xp-bg');
      chip.style.removeProperty('--xp-fg');
    }
    $('explain-legend').replaceChildren();
  };
  const applyShades = (runId, data) => {
    clearShades();
    const shades = chipShades(data.scores);
    for (const chip of conversationRoot.querySelectorAll('[data-testid="token"]')) {
      const j = Number(chip.dataset.position);
      if (!(j < shades.length)) continue;
      chip.dataset.xp = data.scores[j].toFixed(5); // a render of the score, for CSS and tests
      chip.style.setProperty('--xp-bg', shades[j].bg);
      chip.style.setProperty('--xp-fg', shades[j].fg);
    }
    conversationRoot.dataset.explainShaded = data.method;
    shadedFor = runId;
    const lg = inputsLegend(data.scores, data.method, t);
    const bar = el(doc, 'span', 'legend-bar explain-legend-bar');
    bar.style.background = lg.gradient;
    $('explain-legend').replaceChildren(
      el(doc, 'span', 'explain-legend-title', t('explain.legendTitle', { method: t(`explain.method.${data.method}`) })),
      el(doc, 'span', 'legend-lo', lg.lo), bar, el(doc, 'span', 'legend-hi', lg.hi),
    );
  };

  // ---------- the toolbar's events write to the store ----------
  for (const b of doc.querySelectorAll('[data-explain-mode-btn]')) {
    b.addEventListener('click', () => store.set({ explainMode: b.dataset.explainModeBtn, explainEdge: null }));
  }
  const idOrNull = (v) => (v === '' || v == null ? null : Number(v));
  $('explain-target').addEventListener('change', (ev) => {
    const target = idOrNull(ev.target.value);
    const s = store.get();
    // a contrast equal to the new target means nothing: drop it
    store.set({ explainTarget: target, explainContrast: s.explainContrast === (target ?? s.explainCandidates?.data?.token?.id) ? null : s.explainContrast });
  });
  $('explain-contrast').addEventListener('change', (ev) => store.set({ explainContrast: idOrNull(ev.target.value) }));
  $('explain-runner-up').addEventListener('click', () => {
    const s = store.get();
    const cands = s.explainCandidates;
    if (!cands) return;
    const ru = runnerUp(cands.data.candidates, s.explainTarget ?? cands.data.token.id);
    if (ru) store.set({ explainContrast: ru.id });
  });
  // "Steer along this": the logit answer's readout direction becomes the Steer tab's raw vector.
  let lastDirection = null;
  $('explain-steer').addEventListener('click', () => {
    if (!lastDirection) return;
    const values = lastDirection.map((v) => String(v)).join(' ');
    store.set((s) => ({ view: 'steer', steerForm: { ...s.steerForm, source: 'direction', direction: values } }));
  });
  $('explain-method').addEventListener('change', (ev) => store.set({ explainMethod: ev.target.value }));
  $('explain-steps').addEventListener('change', (ev) => {
    const steps = parseSteps(ev.target.value);
    ev.target.value = String(steps);
    store.set({ explainSteps: steps });
  });
  $('explain-threshold').addEventListener('input', (ev) => {
    $('explain-threshold-value').textContent = Number(ev.target.value).toFixed(2);
  });
  $('explain-threshold').addEventListener('change', (ev) => store.set({ explainThreshold: Number(ev.target.value) }));

  // "Why this and not that?" in the Probabilities view: the candidates of the selected position.
  const whyNotSelect = $('why-not-select');
  let whyNotSeq = 0;
  const fillWhyNot = async () => {
    const s = store.get();
    const seq = ++whyNotSeq;
    const pos = s.selected;
    if (!s.run || s.view !== 'probs' || pos == null || pos <= 0) {
      whyNotSelect.replaceChildren();
      whyNotSelect.disabled = true;
      $('why-not').disabled = true;
      return;
    }
    try {
      const data = await api.tokenProbs(s.run.run_id, pos, s.topN); // the same (cached) request as the chart's
      if (seq !== whyNotSeq) return;
      const others = data.candidates.filter((c) => c.id !== data.token.id);
      whyNotSelect.replaceChildren(...others.map((c, i) => option(doc, c.id,
        `${candidateLabel(c, 16)}${i === 0 ? ` · ${t('explain.runnerUp')}` : ''}`)));
      whyNotSelect.disabled = !others.length;
      $('why-not').disabled = !others.length;
    } catch {
      if (seq === whyNotSeq) { whyNotSelect.replaceChildren(); $('why-not').disabled = true; }
    }
  };
  $('why-not').addEventListener('click', () => {
    if (!whyNotSelect.value) return;
    store.set(whyNotPatch(Number(whyNotSelect.value)));
  });

  store.subscribe((s, prev, changed) => {
    // A new position (or run) starts from its own token, without a contrast.
    if ((changed.has('selected') || changed.has('run')) && !changed.has('explainContrast')
      && (s.explainTarget != null || s.explainContrast != null || s.explainEdge != null)) {
      store.set({ explainTarget: null, explainContrast: null, explainEdge: null });
    }
    if (['explainMode', 'explainMethod', 'view'].some((k) => changed.has(k))) renderMode(s);
    if (['explainMethod', 'explainSteps', 'explainThreshold'].some((k) => changed.has(k))) renderValues(s);
    if (['explainCandidates', 'explainTarget', 'explainContrast', 'selected', 'run'].some((k) => changed.has(k))) renderChoices(s);
    if (['explainEdge', 'explainMode', 'labels'].some((k) => changed.has(k))) renderInfo(s);
    const inputsOnShow = s.view === 'explain' && s.explainMode === 'inputs';
    if (!inputsOnShow || ['run', 'selected', 'explainMethod', 'explainTarget', 'explainContrast', 'explainSteps'].some((k) => changed.has(k))) {
      clearShades();
    }
    if (['view', 'selected', 'run', 'topN'].some((k) => changed.has(k))) fillWhyNot();
  });
  renderMode(store.get());
  renderValues(store.get());

  // The client caches GET answers as shared promises: a request that another redraw may share
  // is never given this redraw's abort signal (aborting it would fail the other one too).

  /** The token_probs candidates of the position (cached by the client), put in the store. */
  const loadCandidates = async (run, pos) => {
    const data = await api.tokenProbs(run.run_id, pos, CANDIDATES_N);
    const cur = store.get().explainCandidates;
    if (!cur || cur.runId !== run.run_id || cur.position !== pos || cur.data !== data) {
      store.set({ explainCandidates: { runId: run.run_id, position: pos, data } });
    }
    return data;
  };

  // The input-attribution job in flight: {key, jobId, answer}. A redraw that asks for the same
  // thing (a resize, a language change) follows the same job instead of starting another; one
  // that asks for something else, or leaves the sub-view, cancels it. A handle, not state.
  let inflight = null;
  const dropJob = (job) => {
    if (inflight === job) inflight = null;
    api.cancel(job.jobId).catch(() => {}); // its request then answers 409
  };

  /** A slow input attribution as a named job: progress from /api/jobs/<id>, Stop cancels. */
  const inputsJob = async (params, ctx) => {
    const key = JSON.stringify(params);
    if (!inflight || inflight.key !== key) {
      if (inflight) dropJob(inflight);
      const jobId = newJobId();
      const job = { key, jobId, answer: api.explainInputs({ ...params, job_id: jobId }) };
      job.answer.then(() => { if (inflight === job) inflight = null; }, () => { if (inflight === job) inflight = null; });
      inflight = job;
    }
    const job = inflight;
    let stopped = false;
    const stop = new Promise((resolve) => {
      ctx.onStop(() => {
        stopped = true;
        dropJob(job);
        resolve(null);
      });
    });
    const follow = async () => {
      try {
        const p = await api.job(job.jobId);
        // the job counts gradient passes (IG: its steps), not positions
        if (!stopped && p.total) {
          ctx.progress({ text: t('explain.progressSteps', { method: t(`explain.method.${params.method}`), done: p.done, total: p.total }) });
        }
      } catch { /* not started yet, or already done */ }
    };
    const poll = setInterval(follow, JOB_POLL_MS);
    ctx.signal?.addEventListener('abort', () => {
      clearInterval(poll);
      // superseded: keep the job only if the page still asks for exactly this
      if (inflight === job && wantedJobKey(store.get()) !== job.key) dropJob(job);
    }, { once: true });
    const stoppedView = { message: t('view.stopped', { view: t('tab.explain') }), stopped: true };
    try {
      const answer = await Promise.race([job.answer, stop]);
      return stopped || answer === null ? stoppedView : answer;
    } catch (err) {
      if (stopped || err?.status === 409) return stoppedView;
      throw err;
    } finally {
      clearInterval(poll);
    }
  };

  return {
    name: 'explain',
    watch: ['explainMode', 'explainTarget', 'explainContrast', 'explainMethod', 'explainSteps', 'explainThreshold'],
    loaders: {
      async explain(run, ctx) {
        const s = ctx.state;
        const pos = ctx.selected;
        const problem = explainProblem(run, pos);
        if (problem) return { message: t(problem) };
        await loadCandidates(run, pos);
        const params = explainParams(run.run_id, pos, s.explainTarget, s.explainContrast);
        const mode = EXPLAIN_MODES.includes(s.explainMode) ? s.explainMode : 'logit';
        if (mode === 'logit') {
          ctx.progress?.({ text: t('explain.loadingLogit') });
          $('explain-steer').disabled = true; // until this position's direction is here
          const data = await api.explainLogit(params);
          if (!ctx.signal?.aborted) {
            lastDirection = Array.isArray(data.direction) ? data.direction : null;
            $('explain-steer').disabled = !lastDirection;
          }
          return buildLogitOption(data, ctx);
        }
        if (mode === 'flow') {
          ctx.progress?.({ text: t('explain.loadingFlow') });
          const data = await api.explainFlow({ ...params, threshold: s.explainThreshold });
          return buildFlowOption({ position: pos, query_position: pos - 1, ...data }, ctx);
        }
        const inputParams = inputsRequest(s);
        const { method } = inputParams;
        ctx.progress?.({ text: t('explain.loadingInputs', { method: t(`explain.method.${method}`) }) });
        const data = JOB_METHODS.includes(method) && ctx.onStop
          ? await inputsJob(inputParams, ctx)
          : await api.explainInputs(inputParams);
        if (data.message) return data;
        if (!ctx.signal?.aborted) applyShades(run.run_id, data);
        return buildInputsOption(data, ctx);
      },
    },
    onChartClick(p, shown, ctx) {
      if (shown.view !== 'explain') return false;
      const head = logitClickHead(p);
      if (head && (p.event?.event?.shiftKey || p.event?.event?.altKey)) {
        // Shift-click (or Alt-click): pick the head to ablate (the Heads tab's Ablate bar runs it).
        const s = store.get();
        const picked = toggleHead(s.ablateHeads, head.layer, head.head, { kvGroup: kvGroupOf(s.model) });
        store.set({ ablateHeads: picked });
        const info = $('explain-info');
        info.textContent = t('explain.picked', { n: picked.length, heads: headsText(picked) });
        info.dataset.picked = String(picked.length);
        return true;
      }
      if (head) {
        // That head's attention row for the query row that predicted this token (position - 1).
        const q = Number(shown.meta.position) - 1;
        store.set({ view: 'heads', headsMode: 'row', rowHead: head.head, layer: head.layer });
        ctx.select(q);
        return true;
      }
      const edge = flowClickEdge(p);
      if (edge) {
        store.set({ explainEdge: edge });
        return true;
      }
      return p?.seriesId === 'logit-heat' || p?.seriesId === 'logit-top';
    },
    exportDetail: (view, s) => (view === 'explain' ? explainExportDetail(s) : undefined),
    onLanguage: () => {
      fillMethods();
      renderChoices(store.get());
      renderInfo(store.get());
    },
  };
}
