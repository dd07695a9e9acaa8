// Formatters and small helpers: util.js, tokens.js (fmt*, visible text, grouping), charts.js,
// i18n.js.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { baseTooltip, escapeHtml, labelInterval } from '../../llmvis/web/static/js/charts.js';
import { createI18n, detectLang, format } from '../../llmvis/web/static/js/i18n.js';
import {
  candidateLabel, decodeUtf8, endsIncomplete, fmtNum, fmtPct, fmtProb, formatBytes, groupTokens, hexToBytes,
  newlineCount, readableText, startsWithContinuation, tokenLabels, visibleParts, visibleText,
} from '../../llmvis/web/static/js/tokens.js';
import { el, fmtBytes, kvGroupSize, option } from '../../llmvis/web/static/js/util.js';
import { fakeDoc } from './helpers.mjs';

test('fmtBytes: bytes whole, one decimal below 10 of a unit, whole from 10 up', () => {
  assert.equal(fmtBytes(0), '0 B');
  assert.equal(fmtBytes(512), '512 B');
  assert.equal(fmtBytes(1023), '1023 B');
  assert.equal(fmtBytes(1024), '1.0 KB');
  assert.equal(fmtBytes(1536), '1.5 KB');
  assert.equal(fmtBytes(10 * 1024), '10 KB');
  assert.equal(fmtBytes(48 * 1024 * 1024), '48 MB');
  assert.equal(fmtBytes(1.5 * 1024 ** 3), '1.5 GB');
  assert.equal(fmtBytes(5 * 1024 ** 5), '5120 TB', 'TB is the largest unit');
  assert.equal(fmtBytes(NaN), '—');
  assert.equal(fmtBytes(undefined), '—');
});

test('el sets class and text through textContent only, never as markup', () => {
  const doc = fakeDoc();
  const node = el(doc, 'span', 'chip prompt', '<b>x</b>');
  assert.equal(node.tagName, 'SPAN');
  assert.equal(node.className, 'chip prompt');
  assert.equal(node.textContent, '<b>x</b>');
  assert.equal(node.innerHTML, undefined);
  const bare = el(doc, 'div');
  assert.equal(bare.className, '');
  assert.equal(bare.textContent, '');
  assert.equal(el(doc, 'i', '', 0).textContent, 0, 'zero is text too');
});

test('option holds the value as a string', () => {
  const o = option(fakeDoc(), 3, 'Layer 3');
  assert.equal(o.value, '3');
  assert.equal(o.textContent, 'Layer 3');
});

test('kvGroupSize: query heads per KV head', () => {
  assert.equal(kvGroupSize({ num_heads: 9, num_kv_heads: 3 }), 3);
  assert.equal(kvGroupSize({ num_heads: 14, num_kv_heads: 2 }), 7);
  assert.equal(kvGroupSize({ num_heads: 8 }), 1, 'no KV heads given: plain multi-head');
  assert.equal(kvGroupSize(null), 1);
});

test('visibleParts splits text into plain runs and whitespace markers', () => {
  assert.deepEqual(visibleParts('a b\n'), [
    { text: 'a', ws: false }, { text: '·', ws: true }, { text: 'b', ws: false }, { text: '↵', ws: true },
  ]);
  assert.deepEqual(visibleParts('  \t'), [{ text: '··⇥', ws: true }]);
  assert.deepEqual(visibleParts(null), []);
});

test('visibleText shows invisible and control characters and cuts long text with an ellipsis', () => {
  assert.equal(visibleText('\u200b'), '⟨U+200B⟩');
  assert.equal(visibleText('\u202e'), '⟨U+202E⟩');
  assert.equal(visibleText('\x01'), '␁');
  assert.equal(visibleText('\x7f'), '␡');
  assert.equal(visibleText('\u3000x'), '□x');
  assert.equal(visibleText('hello world', 5), 'hell…');
  assert.equal(visibleText('hello', 5), 'hello');
  assert.equal(visibleText('你好世界', 3), '你好…', 'counted in characters, not UTF-16 units');
  assert.equal(visibleText(undefined), '');
});

test('newlineCount counts line feeds only', () => {
  assert.equal(newlineCount('a\n\nb\n'), 3);
  assert.equal(newlineCount('a\r b'), 0);
  assert.equal(newlineCount(null), 0);
});

test('hex bytes: parse, format, and the UTF-8 sequence checks', () => {
  assert.deepEqual([...hexToBytes('e4bda0')], [0xe4, 0xbd, 0xa0]);
  assert.deepEqual([...hexToBytes('abc')], [], 'odd length is invalid');
  assert.deepEqual([...hexToBytes('zz')], []);
  assert.equal(formatBytes(Uint8Array.of(0xe4, 0x0a)), 'e4 0a');
  assert.equal(endsIncomplete(Uint8Array.of(0xe4, 0xbd)), true);
  assert.equal(endsIncomplete(Uint8Array.of(0xe4, 0xbd, 0xa0)), false);
  assert.equal(endsIncomplete(Uint8Array.of(0x61, 0xf0, 0x9f)), true, 'a 4-byte sequence cut after 2');
  assert.equal(endsIncomplete(Uint8Array.of(0x61)), false);
  assert.equal(endsIncomplete(new Uint8Array(0)), false);
  assert.equal(startsWithContinuation(Uint8Array.of(0xa0)), true);
  assert.equal(startsWithContinuation(Uint8Array.of(0x61)), false);
  assert.equal(decodeUtf8(Uint8Array.of(0xe4, 0xbd, 0xa0)), '你');
  assert.equal(decodeUtf8(Uint8Array.of(0xe4, 0xbd)), '\ufffd');
});

// "a", then 你 split over two byte tokens, then "!".
const SPLIT = [
  { position: 0, text: 'a', bytes: '61', source: 'prompt' },
  { position: 1, text: '\ufffd', bytes: 'e4bd', partial: true, source: 'generated' },
  { position: 2, text: '\ufffd', bytes: 'a0', partial: true, source: 'generated' },
  { position: 3, text: '!', bytes: '21', source: 'generated' },
];

test('groupTokens joins the byte tokens of one character and leaves the others alone', () => {
  const items = groupTokens(SPLIT);
  assert.deepEqual(items.map((it) => it.kind), ['token', 'group', 'token']);
  assert.equal(items[1].text, '你');
  assert.deepEqual(items[1].tokens.map((x) => x.position), [1, 2]);
  assert.deepEqual(items[1].bytes.map((b) => [...b]), [[0xe4, 0xbd], [0xa0]]);
  assert.equal(items[2].token.position, 3);
  assert.equal(readableText(items), 'a你!');
});

test('groupTokens does not join across a special token or a change of source', () => {
  const toks = [
    { position: 0, text: '\ufffd', bytes: 'e4bd', partial: true, source: 'prompt' },
    { position: 1, text: '\ufffd', bytes: 'a0', partial: true, source: 'generated' },
  ];
  const items = groupTokens(toks);
  assert.equal(items.length, 2);
  assert.deepEqual(items.map((it) => it.tokens.length), [1, 1]);
});

test('tokenLabels names each piece of a split character with its subscript', () => {
  assert.deepEqual(tokenLabels(SPLIT), ['a', '你₁', '你₂', '!']);
  assert.deepEqual(tokenLabels([{ position: 0, text: 'hello world', bytes: '' }], 4), ['hel…']);
});

test('candidateLabel shows a partial candidate as its bytes', () => {
  assert.equal(candidateLabel({ partial: true, bytes: 'e4bd', text: '\ufffd' }), '⟨e4 bd⟩');
  assert.equal(candidateLabel({ text: ' hi' }), '·hi');
});

test('fmtProb: three decimals from 0.1, four from 0.001, exponent below', () => {
  assert.equal(fmtProb(0.5), '0.500');
  assert.equal(fmtProb(0.1), '0.100');
  assert.equal(fmtProb(0.05), '0.0500');
  assert.equal(fmtProb(0.001), '0.0010');
  assert.equal(fmtProb(0.0001234), '1.2e-4');
  assert.equal(fmtProb(0), '0');
  assert.equal(fmtProb(null), '—');
  assert.equal(fmtProb(Infinity), '—');
});

test('fmtNum and fmtPct', () => {
  assert.equal(fmtNum(1.23456), '1.235');
  assert.equal(fmtNum(2, 1), '2.0');
  assert.equal(fmtNum(NaN), '—');
  assert.equal(fmtNum(null), '—');
  assert.equal(fmtPct(0.1234), '12.3%');
  assert.equal(fmtPct(1, 0), '100%');
  assert.equal(fmtPct(undefined), '—');
});

test('escapeHtml escapes the five HTML characters', () => {
  assert.equal(escapeHtml(`<a href="x">&'`), '&lt;a href=&quot;x&quot;&gt;&amp;&#39;');
  assert.equal(escapeHtml(null), '');
});

test('labelInterval draws at most maxLabels labels', () => {
  assert.equal(labelInterval(10, 20), 0);
  assert.equal(labelInterval(20, 20), 0);
  assert.equal(labelInterval(100, 10), 9);
  assert.equal(labelInterval(101, 10), 10);
});

test('baseTooltip keeps tooltips inside the chart', () => {
  assert.deepEqual(baseTooltip({ trigger: 'item' }), { confine: true, appendToBody: false, trigger: 'item' });
});

test('i18n: placeholders, language detection and switching', () => {
  assert.equal(format('a {x} {y}', { x: 1 }), 'a 1 {y}', 'an unknown placeholder stays');
  assert.equal(detectLang('zh-CN', null), 'zh');
  assert.equal(detectLang('en-US', 'zh'), 'zh', 'a saved choice wins');
  assert.equal(detectLang('fr', 'de'), 'en', 'an unknown saved value is ignored');
  const saved = new Map();
  const win = {
    navigator: { language: 'en-GB' },
    localStorage: { getItem: (k) => saved.get(k) ?? null, setItem: (k, v) => saved.set(k, v) },
  };
  const i18n = createI18n(win);
  assert.equal(i18n.lang, 'en');
  assert.equal(i18n.t('tab.lens'), 'Layers');
  assert.equal(i18n.t('no.such.key'), 'no.such.key');
  const heard = [];
  i18n.onChange((lang) => heard.push(lang));
  i18n.setLang('zh');
  i18n.setLang('xx');
  i18n.setLang('zh');
  assert.deepEqual(heard, ['zh'], 'only a real change is announced');
  assert.equal(i18n.t('tab.lens'), '逐层');
  assert.equal(saved.get('llmvis.lang'), 'zh');
  assert.equal(createI18n(win).lang, 'zh', 'the choice is remembered');
});
