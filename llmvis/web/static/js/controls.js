// The left column: prompt, sampling controls, model info, busy state and the error line.
// One-way: input events write the form's values into the store (state.form); the inputs, the
// busy indicator, the error line, the model info and the last seed are drawn from the store.

import { el } from './util.js';

/** Store key of each form field → the id of its input (sliders also have "<id>-range"). */
export const FORM_FIELDS = Object.freeze({
  prompt: 'prompt',
  system: 'system',
  temperature: 'temperature',
  top_k: 'top-k',
  top_p: 'top-p',
  max_new_tokens: 'max-new-tokens',
  seed: 'seed',
});
const SLIDERS = Object.freeze(['temperature', 'top_k', 'top_p', 'max_new_tokens']);

/** Are two flat objects equal key by key? Pure. */
export function sameFields(a, b) {
  const ka = Object.keys(a || {});
  return ka.length === Object.keys(b || {}).length && ka.every((k) => Object.is(a[k], b[k]));
}

/**
 * The sampling fields of the form: store key, the i18n key of its label, and its allowed range
 * (the server's, so a bad value is caught here with the form's own words).
 */
const NUMBER_FIELDS = Object.freeze([
  { key: 'temperature', label: 'sampling.temperature', int: false, min: 0, max: 100 },
  { key: 'top_k', label: 'sampling.topK', int: true, min: 0 },
  { key: 'top_p', label: 'sampling.topP', int: false, min: 0, minOpen: true, max: 1 },
  { key: 'max_new_tokens', label: 'sampling.maxNewTokens', int: true, min: 1 },
]);

/** The range of a field as text for an error: "(0, 1]", "≥ 0", "[1, 512]". Pure. */
function rangeText({ min, max, minOpen }) {
  if (max == null) return `≥ ${min}`;
  return `${minOpen ? '(' : '['}${min}, ${max}]`;
}

/**
 * Validate the sampling fields of the form (temperature, top_k, top_p, max_new_tokens, seed).
 * Errors name the field by its label. opts.maxNew: the server's cap on new tokens.
 * Returns {settings} or {error}. Pure; `t` translates.
 */
export function samplingSettings(raw, t, { maxNew = null } = {}) {
  const settings = {};
  for (const f of NUMBER_FIELDS) {
    const field = t(f.label);
    const s = String(raw[f.key] ?? '').trim();
    const x = Number(s);
    if (s === '' || !Number.isFinite(x)) return { error: t('err.badNumber', { field }) };
    if (f.int && !Number.isInteger(x)) return { error: t('err.notInteger', { field }) };
    const max = f.key === 'max_new_tokens' && Number.isFinite(maxNew) ? maxNew : f.max;
    const range = { ...f, max };
    if (x < f.min || (f.minOpen && x <= f.min) || (max != null && x > max)) {
      return { error: t('err.outOfRange', { field, range: rangeText(range) }) };
    }
    settings[f.key] = x;
  }
  const seed = String(raw.seed ?? '').trim();
  if (seed !== '') {
    const x = Number(seed);
    const field = t('sampling.seed');
    if (!Number.isFinite(x)) return { error: t('err.badNumber', { field }) };
    if (!Number.isInteger(x) || x < 0) return { error: t('err.seedRange', { field }) };
    settings.seed = x;
  }
  return { settings };
}

/**
 * Validate raw form values and build the /api/generate payload.
 * Returns {payload} or {error}. Pure; `t` translates messages.
 */
export function buildPayload(raw, t, opts) {
  const prompt = String(raw.prompt ?? '');
  if (!prompt.trim()) return { error: t('err.emptyPrompt') };
  const { settings, error } = samplingSettings(raw, t, opts);
  if (error) return { error };
  const payload = { prompt };
  if (String(raw.system ?? '').trim()) payload.system = String(raw.system);
  return { payload: { ...payload, ...settings } };
}

/**
 * The form's values that reproduce a run: its prompt and system text (rebuilt from the tokens'
 * segments: the API's `text` is the raw token text) and its sampling settings. A scored run
 * gives its text instead, and keeps the form's sampling values. Pure.
 */
export function formFromRun(run, form = {}) {
  const prompt = (run.tokens || []).filter((x) => x.source === 'prompt');
  const join = (seg) => prompt.filter((x) => x.segment === seg).map((x) => x.text).join('');
  if (run.kind === 'score') {
    const text = prompt.some((x) => x.segment === 'user') ? join('user') : prompt.map((x) => x.text).join('');
    return { form: { ...form }, scoreText: text, scoreTemplate: prompt.some((x) => x.segment === 'template') };
  }
  const p = run.params || {};
  const str = (v, fallback) => (v == null ? fallback : String(v));
  return {
    form: {
      ...form,
      prompt: join('user'),
      system: join('system'),
      temperature: str(p.temperature, form.temperature),
      top_k: str(p.top_k, form.top_k),
      top_p: str(p.top_p, form.top_p),
      max_new_tokens: str(p.max_new_tokens, form.max_new_tokens),
      seed: str(p.seed, ''),
    },
  };
}

/**
 * The left column, as a registry feature (language hook only); its own controls write to the
 * store and it draws them from the store. page: {doc, i18n, store}.
 */
export function createControls({ doc, i18n, store }) {
  const $ = (id) => doc.getElementById(id);
  const { t } = i18n;
  const form = $('gen-form');
  const errorEl = $('error');
  const busyEl = $('busy');
  const generateBtn = $('generate');
  const modelDl = $('model-info');
  const seedLast = $('seed-last');

  /** The form's values as strings; a slider's range input wins when it is the one that moved. */
  const readForm = (target) => {
    const out = {};
    for (const [key, id] of Object.entries(FORM_FIELDS)) {
      const range = SLIDERS.includes(key) ? $(`${id}-range`) : null;
      out[key] = range && target === range ? range.value : $(id).value;
    }
    return out;
  };
  const sync = (target) => {
    const next = readForm(target);
    if (!sameFields(next, store.get().form)) store.set({ form: next });
  };
  form.addEventListener('input', (ev) => sync(ev.target));
  form.addEventListener('change', (ev) => sync(ev.target));

  const renderForm = (values) => {
    for (const [key, id] of Object.entries(FORM_FIELDS)) {
      const v = values[key] ?? '';
      const input = $(id);
      if (input.value !== v) input.value = v;
      const range = SLIDERS.includes(key) ? $(`${id}-range`) : null;
      if (range && v !== '' && range.value !== v) range.value = v;
    }
  };

  const dlRow = (label, value) => {
    const dd = el(doc, 'dd', '', value);
    dd.title = value;
    modelDl.append(el(doc, 'dt', '', label), dd);
  };
  const renderModel = () => {
    const { model } = store.get();
    modelDl.replaceChildren();
    if (!model) {
      dlRow(t('model.unavailable'), '');
      return;
    }
    dlRow(t('model.name'), String(model.name ?? '—'));
    dlRow(t('model.architecture'), String(model.architecture ?? '—'));
    dlRow(t('model.layers'), String(model.num_layers ?? '—'));
    dlRow(t('model.heads'), String(model.num_heads ?? '—'));
    dlRow(t('model.kvHeads'), String(model.num_kv_heads ?? '—'));
    dlRow(t('model.hidden'), String(model.hidden_size ?? '—'));
    dlRow(t('model.vocab'), model.vocab_size == null ? '—' : Number(model.vocab_size).toLocaleString());
    dlRow(t('model.device'), `${model.device ?? '—'} · ${model.dtype ?? ''}`);
  };

  /** The server's limit on new tokens caps the slider (and the value, when it is above). */
  const applyLimits = (model) => {
    const maxNew = model?.limits?.max_new_tokens;
    if (!(Number.isFinite(maxNew) && maxNew > 0)) return;
    for (const input of [$('max-new-tokens'), $('max-new-tokens-range')]) input.max = String(maxNew);
    const { form: values } = store.get();
    if (Number(values.max_new_tokens) > maxNew) store.set({ form: { ...values, max_new_tokens: String(maxNew) } });
  };

  const renderBusy = (busy) => {
    busyEl.hidden = !busy;
    generateBtn.disabled = Boolean(busy);
    form.setAttribute('aria-busy', busy ? 'true' : 'false');
    doc.body.dataset.busy = busy ? 'true' : 'false'; // a render of state.busy for CSS and tests; never read
  };

  const renderError = (message) => {
    errorEl.textContent = message || '';
    errorEl.classList.toggle('visible', Boolean(message));
  };

  const renderSeed = (seed) => {
    seedLast.hidden = seed == null;
    if (seed != null) seedLast.textContent = `↺ ${seed}`;
  };

  seedLast.addEventListener('click', () => {
    const { lastSeed, form: values } = store.get();
    if (lastSeed != null) store.set({ form: { ...values, seed: String(lastSeed) } });
  });

  store.subscribe((s, prev, changed) => {
    if (changed.has('form')) renderForm(s.form);
    if (changed.has('busy')) renderBusy(s.busy);
    if (changed.has('error')) renderError(s.error);
    if (changed.has('lastSeed')) renderSeed(s.lastSeed);
    if (changed.has('model')) { applyLimits(s.model); renderModel(); }
  });

  // The form as the HTML wrote it is the starting state.
  store.set({ form: readForm(null) });
  renderBusy(store.get().busy);

  return { name: 'controls', onLanguage: renderModel };
}
