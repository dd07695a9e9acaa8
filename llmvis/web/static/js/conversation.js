// The centre panel: every token as a chip. All token text is set with textContent.

import {
  CHIP_MAP, GLTR_BUCKETS, cssGradient, gltrBucket, gltrGradient, luminance, metricDomain, metricT, mixHex, sampleMap,
} from './colors.js';

import {
  fmtNum, fmtProb, formatBytes, groupTokens, hexToBytes, newlineCount, visibleParts, visibleText,
} from './tokens.js';
import { el } from './util.js';

const PANEL_BG = '#161b22';
export const CHIP_DARK_TEXT = '#000000';
export const CHIP_LIGHT_TEXT = '#ffffff';

/** WCAG contrast ratio of two colours (#rrggbb). Pure. */
export function contrastRatio(a, b) {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

/** The chip text colour, dark or light, whichever contrasts more with `bg` (WCAG). Pure. */
export function chipTextOn(bg) {
  return contrastRatio(CHIP_DARK_TEXT, bg) >= contrastRatio(CHIP_LIGHT_TEXT, bg) ? CHIP_DARK_TEXT : CHIP_LIGHT_TEXT;
}

/** Fill a node with the visible form of text: plain runs and dimmed whitespace markers. */
function fillVisible(doc, node, text) {
  for (const part of visibleParts(text)) {
    if (part.ws) node.append(el(doc, 'span', 'ws', part.text));
    else node.append(doc.createTextNode(part.text));
  }
  if (!node.childNodes.length) node.append(el(doc, 'span', 'ws', '∅'));
}

function makeChip(doc, token, { inGroup = false } = {}) {
  const chip = el(doc, 'span', 'chip');
  chip.setAttribute('data-testid', 'token');
  chip.dataset.position = String(token.position);
  chip.dataset.source = token.source;
  chip.dataset.segment = token.segment || '';
  chip.setAttribute('role', 'option');
  chip.setAttribute('aria-selected', 'false');
  chip.classList.add(token.source === 'generated' ? 'generated' : 'prompt');
  if (token.segment === 'template') chip.classList.add('template');
  if (token.special) chip.classList.add('special');
  if (inGroup) {
    chip.classList.add('partial');
    const hex = formatBytes(hexToBytes(token.bytes));
    chip.append(el(doc, 'span', 'chip-bytes', hex || '··'));
  } else {
    const label = el(doc, 'span', 'chip-label');
    fillVisible(doc, label, token.text);
    chip.append(label);
  }
  return chip;
}

function lineBreak(doc) {
  return el(doc, 'span', 'line-break');
}

/**
 * Create the conversation view inside `root`.
 * onSelect(position) is called when a chip is clicked.
 */
export function createConversation(root, { tooltip, i18n, onSelect }) {
  let chips = [];
  let tokens = [];
  let groupTextOf = new Map();
  let metric = 'prob';
  let domain = { entropyMax: 1, rankMax: 10 };
  let selected = null;
  let runKind = 'generate';
  const { t } = i18n;
  const doc = root.ownerDocument;
  const win = doc.defaultView;

  const colourChip = (chip, token) => {
    const v = metricT(token, metric, domain);
    if (v === null) {
      chip.style.removeProperty('--chip-bg');
      chip.style.removeProperty('--chip-fg');
      chip.classList.add('no-stat');
      return;
    }
    chip.classList.remove('no-stat');
    // Prompt chips are drawn half-way to the panel colour so generated tokens stand out
    // (scored text is all "prompt" and drawn in full). GLTR colours its four rank buckets.
    const pure = metric === 'gltr' ? GLTR_BUCKETS[gltrBucket(token.rank)].colour : sampleMap(CHIP_MAP, v);
    const bg = token.source === 'generated' || runKind === 'score' ? pure : mixHex(pure, PANEL_BG, 0.45);
    chip.style.setProperty('--chip-bg', bg);
    chip.style.setProperty('--chip-fg', chipTextOn(bg));
  };

  const recolour = () => {
    chips.forEach((chip, i) => colourChip(chip, tokens[i]));
  };

  const render = (run) => {
    tokens = run.tokens;
    runKind = run.kind || 'generate';
    domain = metricDomain(tokens);
    chips = new Array(tokens.length);
    groupTextOf = new Map();
    selected = null;
    const frag = doc.createDocumentFragment();
    let generationMarked = false;
    for (const item of groupTokens(tokens)) {
      const first = item.kind === 'group' ? item.tokens[0] : item.token;
      if (!generationMarked && first.source === 'generated') {
        generationMarked = true;
        const marker = el(doc, 'span', 'gen-marker', t('conv.generationStarts'));
        marker.setAttribute('aria-hidden', 'true');
        frag.append(marker);
      }
      if (item.kind === 'token') {
        const chip = makeChip(doc, item.token);
        chips[item.token.position] = chip;
        frag.append(chip);
        for (let k = 0; k < Math.min(2, newlineCount(item.token.text)); k += 1) frag.append(lineBreak(doc));
        continue;
      }
      const group = el(doc, 'span', 'ugroup');
      group.classList.add(first.source === 'generated' ? 'generated' : 'prompt');
      const label = el(doc, 'span', 'ugroup-text');
      fillVisible(doc, label, item.text);
      const row = el(doc, 'span', 'ugroup-chips');
      for (const tok of item.tokens) {
        const chip = makeChip(doc, tok, { inGroup: true });
        chips[tok.position] = chip;
        groupTextOf.set(tok.position, item.text);
        row.append(chip);
      }
      group.append(label, row);
      frag.append(group);
      if (newlineCount(item.text)) frag.append(lineBreak(doc));
    }
    root.replaceChildren(frag);
    root.setAttribute('role', 'listbox');
    recolour();
  };

  const select = (position, { scroll = true } = {}) => {
    if (selected !== null && chips[selected]) {
      chips[selected].classList.remove('selected');
      chips[selected].setAttribute('aria-selected', 'false');
    }
    selected = position;
    const chip = chips[position];
    if (!chip) return;
    chip.classList.add('selected');
    chip.setAttribute('aria-selected', 'true');
    if (scroll) chip.scrollIntoView({ block: 'nearest', inline: 'nearest' });
  };

  const setMetric = (m) => {
    metric = m;
    recolour();
  };

  /** Legend pieces for the current metric: gradient and end labels. */
  const legend = () => {
    const gradient = cssGradient(CHIP_MAP);
    if (metric === 'prob') return { gradient, lo: `p=1 ${t('legend.prob.lo')}`, hi: `p=0 ${t('legend.prob.hi')}` };
    if (metric === 'entropy') return { gradient, lo: t('legend.entropy.lo'), hi: `≥ ${domain.entropyMax}` };
    if (metric === 'gltr') return { gradient: gltrGradient(), lo: t('legend.gltr.lo'), hi: t('legend.gltr.hi') };
    return { gradient, lo: t('legend.rank.lo'), hi: `≥ ${domain.rankMax.toLocaleString()}` };
  };

  // Tooltip: one element, filled on hover with the token's statistics.
  const showTooltip = (chip) => {
    const pos = Number(chip.dataset.position);
    const tok = tokens[pos];
    if (!tok) return;
    tooltip.replaceChildren();
    const head = el(doc, 'div', 'tip-head');
    const tokText = el(doc, 'span', 'tip-token');
    fillVisible(doc, tokText, groupTextOf.get(pos) ?? tok.text);
    head.append(tokText);
    const tags = el(doc, 'span', 'tip-tags');
    tags.append(el(doc, 'span', `tip-tag ${tok.source}`, t(`tip.source.${tok.source}`)));
    if (tok.segment) tags.append(el(doc, 'span', 'tip-tag', t(`tip.segment.${tok.segment}`)));
    if (tok.special) tags.append(el(doc, 'span', 'tip-tag special', t('tip.special')));
    if (groupTextOf.has(pos)) tags.append(el(doc, 'span', 'tip-tag partial', t('tip.partial')));
    head.append(tags);
    tooltip.append(head);
    const grid = el(doc, 'dl', 'tip-grid');
    const row = (k, v) => { grid.append(el(doc, 'dt', '', k), el(doc, 'dd', '', v)); };
    row(t('tip.position'), String(tok.position));
    row(t('tip.id'), String(tok.id));
    if (tok.prob == null) {
      row(t('tip.prob'), t('tip.noStats'));
    } else {
      row(t('tip.prob'), fmtProb(tok.prob));
      row(t('tip.rank'), tok.rank == null ? '—' : String(tok.rank));
      row(t('tip.entropy'), `${fmtNum(tok.entropy)} nats`);
      row(t('tip.sampleProb'), tok.sample_prob == null ? '—' : fmtProb(tok.sample_prob));
    }
    row(t('tip.bytes'), formatBytes(hexToBytes(tok.bytes)) || '—');
    tooltip.append(grid);
    tooltip.hidden = false;
    const r = chip.getBoundingClientRect();
    const tw = tooltip.offsetWidth;
    const th = tooltip.offsetHeight;
    let x = Math.min(win.innerWidth - tw - 8, Math.max(8, r.left + r.width / 2 - tw / 2));
    let y = r.bottom + 8;
    if (y + th > win.innerHeight - 8) y = r.top - th - 8;
    tooltip.style.transform = `translate(${Math.round(x)}px, ${Math.round(y)}px)`;
  };

  root.addEventListener('click', (ev) => {
    const chip = ev.target.closest('[data-testid="token"]');
    if (chip && root.contains(chip)) onSelect(Number(chip.dataset.position));
  });
  root.addEventListener('pointerover', (ev) => {
    const chip = ev.target.closest('[data-testid="token"]');
    if (chip) showTooltip(chip);
  });
  root.addEventListener('pointerout', (ev) => {
    const chip = ev.target.closest('[data-testid="token"]');
    if (chip && !chip.contains(ev.relatedTarget)) tooltip.hidden = true;
  });
  root.addEventListener('scroll', () => { tooltip.hidden = true; }, { passive: true });

  return {
    render,
    select,
    setMetric,
    legend,
    get metric() { return metric; },
    visibleTokenText: (pos) => visibleText(groupTextOf.get(pos) ?? tokens[pos]?.text ?? ''),
  };
}
