// Memory estimate of the next run, shown under the Generate button while the user types.
// It asks POST /api/estimate (tokenizes only) a moment after the last change.

import { buildPayload } from './controls.js';
import { fmtBytes } from './util.js';

/** The line to show for an /api/estimate answer. Pure; `t` translates. */
export function estimateText(est, t) {
  const vars = {
    run: fmtBytes(est.run_bytes), peak: fmtBytes(est.peak_bytes),
    tokens: est.num_tokens, budget: fmtBytes(est.store_budget_bytes),
  };
  return est.fits ? t('estimate.fits', vars) : t('estimate.over', { ...vars, message: est.message || '' });
}

/**
 * The estimate line, as a registry feature (language hook only). It follows state.form: a moment
 * after the last change it asks the server and draws the answer. page: {doc, api, i18n, store}.
 */
export function createEstimate({ doc, api, i18n, store }, { delayMs = 350 } = {}) {
  const box = doc.getElementById('estimate');
  let timer = null;
  let seq = 0; // answers to older requests are dropped

  const render = () => {
    const last = store.get().estimate;
    if (!last) { box.textContent = ''; box.hidden = true; return; }
    box.hidden = false;
    box.textContent = estimateText(last, i18n.t);
    box.classList.toggle('over', !last.fits);
    box.dataset.fits = last.fits ? 'true' : 'false';
  };

  const refresh = async () => {
    const { payload } = buildPayload(store.get().form, i18n.t);
    const mine = ++seq;
    if (!payload) { store.set({ estimate: null }); return; }
    try {
      const est = await api.estimate(payload);
      if (mine === seq) store.set({ estimate: est });
    } catch {
      if (mine === seq) store.set({ estimate: null }); // the Generate path shows real errors
    }
  };

  const schedule = () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, delayMs);
  };

  store.subscribe((s, prev, changed) => {
    if (changed.has('form') && prev.form) schedule();
    if (changed.has('estimate')) render();
  });
  return { name: 'estimate', onLanguage: render };
}
