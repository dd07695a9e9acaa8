// Pure helpers behind issue 13's page actions: form validation with the form's labels, the form
// rebuilt from a reopened run, cut masses tied to their distribution, stable branch numbers.
import assert from 'node:assert/strict';
import test from 'node:test';

import { buildPayload, formFromRun, samplingSettings } from '../../llmvis/web/static/js/controls.js';
import { forkBody, withRun } from '../../llmvis/web/static/js/interactive.js';
import { cutMasses, cutMassText } from '../../llmvis/web/static/js/views/probs.js';
import { samplerNote } from '../../llmvis/web/static/js/views/sampler.js';
import { buildEntropyOption } from '../../llmvis/web/static/js/views/entropy.js';
import { t } from './helpers.mjs';

const RAW = { prompt: 'hi', system: '', temperature: '0.7', top_k: '50', top_p: '0.95', max_new_tokens: '64', seed: '' };

test('samplingSettings names a bad field by its label and its range', () => {
  assert.deepEqual(samplingSettings(RAW, t), { settings: { temperature: 0.7, top_k: 50, top_p: 0.95, max_new_tokens: 64 } });
  assert.deepEqual(samplingSettings({ ...RAW, top_p: '1.5' }, t),
    { error: t('err.outOfRange', { field: 'sampling.topP', range: '(0, 1]' }) });
  assert.deepEqual(samplingSettings({ ...RAW, top_p: '0' }, t),
    { error: t('err.outOfRange', { field: 'sampling.topP', range: '(0, 1]' }) });
  assert.deepEqual(samplingSettings({ ...RAW, temperature: '-1' }, t),
    { error: t('err.outOfRange', { field: 'sampling.temperature', range: '[0, 100]' }) });
  assert.deepEqual(samplingSettings({ ...RAW, max_new_tokens: '900' }, t, { maxNew: 512 }),
    { error: t('err.outOfRange', { field: 'sampling.maxNewTokens', range: '[1, 512]' }) });
  assert.deepEqual(samplingSettings({ ...RAW, top_k: '2.5' }, t), { error: t('err.notInteger', { field: 'sampling.topK' }) });
  assert.deepEqual(samplingSettings({ ...RAW, seed: '-3' }, t), { error: t('err.seedRange', { field: 'sampling.seed' }) });
  assert.equal(samplingSettings({ ...RAW, seed: '9' }, t).settings.seed, 9);
  assert.equal(buildPayload({ ...RAW, top_p: '2' }, t).error, t('err.outOfRange', { field: 'sampling.topP', range: '(0, 1]' }));
});

test('a fork sends the form\'s settings, whatever the parent used', () => {
  const settings = { temperature: 0, top_k: 0, top_p: 1, max_new_tokens: 8 };
  assert.deepEqual(forkBody({ run_id: 'g1', kind: 'generate' }, 3, 7, settings),
    { run_id: 'g1', position: 3, token_id: 7, temperature: 0, top_k: 0, top_p: 1, max_new_tokens: 8 });
});

const tk = (position, text, source, segment) => ({ position, text, source, segment });

test('formFromRun rebuilds prompt, system and settings from the run', () => {
  const run = {
    kind: 'generate', params: { temperature: 0, top_k: 0, top_p: 1, max_new_tokens: 8, seed: 5 },
    tokens: [tk(0, '<|im_start|>', 'prompt', 'template'), tk(1, 'Be', 'prompt', 'system'), tk(2, ' brief', 'prompt', 'system'),
      tk(3, '\n', 'prompt', 'template'), tk(4, 'Name', 'prompt', 'user'), tk(5, ' a fruit.', 'prompt', 'user'),
      tk(6, 'Apple', 'generated', 'assistant')],
  };
  assert.deepEqual(formFromRun(run, { ...RAW }).form, {
    prompt: 'Name a fruit.', system: 'Be brief', temperature: '0', top_k: '0', top_p: '1', max_new_tokens: '8', seed: '5',
  });
  const scored = { kind: 'score', params: {}, tokens: [tk(0, 'Hi', 'prompt', 'user'), tk(1, ' there', 'prompt', 'user')] };
  assert.deepEqual(formFromRun(scored, RAW), { form: RAW, scoreText: 'Hi there', scoreTemplate: false });
});

test('branch numbers follow creation time, whatever order the runs were seen in', () => {
  const fork = { run_id: 'f', kind: 'fork', parent_id: 'p', fork_position: 1, created: 200, tokens: [] };
  const root = { run_id: 'p', kind: 'generate', created: 100, tokens: [] };
  const metas = withRun(withRun(new Map(), fork), root);
  assert.equal(metas.get('p').order, 1);
  assert.equal(metas.get('f').order, 2);
  const again = withRun(metas, fork); // seen again: numbers stay
  assert.equal(again.get('p').order, 1);
  assert.equal(again.get('f').order, 2);
});

test('cut masses: greedy and sampled steps both say which distribution each number is of', () => {
  const greedy = {
    token: { source: 'generated' }, cut_mass: 1 - 0.777,
    candidates: [{ prob: 0.777, sample_prob: 1 }, { prob: 0.1, sample_prob: 0 }],
  };
  assert.equal(cutMasses(greedy).greedy, true);
  assert.equal(cutMassText(greedy, t), t('probs.cutGreedy', { mass: '22.30%' }));
  assert.equal(samplerNote(greedy, t, { temperature: 0 }), t('sampler.cutGreedy', { mass: '22.30%' }));
  const sampled = {
    token: { source: 'generated' }, cut_mass: 0.044,
    candidates: [{ prob: 0.5, sample_prob: 0.8 }, { prob: 0.277, sample_prob: 0.2 }, { prob: 0.1, sample_prob: 0 }],
  };
  const c = cutMasses(sampled);
  assert.equal(c.greedy, false);
  assert.ok(Math.abs(c.raw - 0.223) < 1e-9 && c.rawExact);
  assert.equal(cutMassText(sampled, t), `${t('probs.cutTempered', { mass: '4.40%' })} · ${t('probs.cutRaw', { mass: '22.30%' })}`);
});

test('the entropy caption of a scored text averages the scored tokens', () => {
  const tok = (position, entropy, prob) => ({ position, text: 'x', source: 'prompt', entropy, prob });
  const run = { kind: 'score', num_prompt_tokens: 3, tokens: [tok(0, null, null), tok(1, 2, 0.5), tok(2, 4, 0.7)] };
  const { caption } = buildEntropyOption(run, { t, labels: { short: ['a', 'b', 'c'], long: ['a', 'b', 'c'] }, selected: 1 });
  assert.equal(caption, t('entropy.captionScored', { ent: '3.000', conf: '0.600' }));
});
