// The branches of a run: the root generation, the forks made from it, their forks, as a small
// indented tree above the conversation. Pure helpers build the tree from the session's run
// summaries; the renderer only builds DOM (all run text via textContent).

import { visibleText } from './tokens.js';
import { interventionText } from './views/intervene.js';
import { el } from './util.js';

/** What the tree and the diff pickers need to know about a run. Pure. */
export function runMeta(run, order) {
  const forced = run.kind === 'fork' && run.fork_position != null ? run.tokens?.[run.fork_position] : null;
  const gen = (run.tokens || []).filter((x) => x.source === 'generated');
  const from = run.kind === 'fork' && run.fork_position != null ? run.fork_position + 1 : 0;
  const tail = (run.tokens || []).slice(Math.max(from, run.num_prompt_tokens ?? 0)).map((x) => x.text).join('');
  return {
    run_id: run.run_id,
    kind: run.kind || 'generate',
    parent_id: run.parent_id ?? null,
    fork_position: run.fork_position ?? null,
    forced: forced ? forced.text : null,
    preview: tail || (run.kind === 'score' ? (run.tokens || []).map((x) => x.text).join('') : ''),
    params: run.params || {},
    num_generated: gen.length,
    perplexity: run.score?.perplexity ?? null,
    created: run.created ?? null,
    order,
    ...(run.intervention ? { intervention: run.intervention } : {}), // what an intervention run changed (issue 15)
  };
}

/**
 * The tree that contains `currentId`, depth first, children in the order they were made.
 * metas: Map run_id → runMeta. Returns [{meta, depth}] (empty when currentId is unknown). Pure.
 */
export function treeRows(metas, currentId) {
  if (!metas.has(currentId)) return [];
  let root = metas.get(currentId);
  const seen = new Set([root.run_id]);
  while (root.parent_id && metas.has(root.parent_id) && !seen.has(root.parent_id)) {
    root = metas.get(root.parent_id);
    seen.add(root.run_id);
  }
  const children = new Map();
  for (const m of metas.values()) {
    if (!m.parent_id) continue;
    if (!children.has(m.parent_id)) children.set(m.parent_id, []);
    children.get(m.parent_id).push(m);
  }
  const rows = [];
  const visited = new Set();
  const walk = (m, depth) => {
    if (visited.has(m.run_id)) return;
    visited.add(m.run_id);
    rows.push({ meta: m, depth });
    const kids = (children.get(m.run_id) || []).slice().sort((a, b) => a.order - b.order);
    for (const k of kids) walk(k, depth + 1);
  };
  walk(root, 0);
  return rows;
}

/** A short label for a run in pickers: "#3 fork @35 ' apple'". Pure. */
export function runLabel(meta, t) {
  const n = `#${meta.order}`;
  if (meta.kind === 'fork') {
    return `${n} ${t('tree.fork', { pos: meta.fork_position, tok: visibleText(meta.forced ?? '', 12) })}`;
  }
  if (meta.kind === 'intervention') return `${n} ${interventionText(meta.intervention, t) || t('tree.intervention')}`;
  if (meta.kind === 'score') {
    return `${n} ${t('tree.score', { text: visibleText(meta.preview, 18) })}`;
  }
  return `${n} ${t('tree.generate', { temp: meta.params.temperature ?? '—', text: visibleText(meta.preview, 18) })}`;
}

/**
 * Draw the tree rows into `root`. Each branch is a button (data-testid="branch",
 * data-run-id); forks also get a "diff with parent" button (data-testid="compare-parent").
 */
export function renderForkTree(root, rows, { t, currentId, doc = root.ownerDocument }) {
  const list = el(doc, 'div', 'tree-rows');
  list.setAttribute('role', 'list');
  for (const { meta, depth } of rows) {
    const row = el(doc, 'div', 'tree-row');
    row.setAttribute('role', 'listitem');
    row.style.setProperty('--depth', String(depth));
    const btn = el(doc, 'button', 'branch');
    btn.type = 'button';
    btn.setAttribute('data-testid', 'branch');
    btn.dataset.runId = meta.run_id;
    btn.dataset.kind = meta.kind;
    const current = meta.run_id === currentId;
    btn.classList.toggle('current', current);
    btn.setAttribute('aria-current', current ? 'true' : 'false');
    if (depth > 0) btn.append(el(doc, 'span', 'branch-elbow', '└'));
    btn.append(el(doc, 'span', 'branch-order', `#${meta.order}`));
    if (meta.kind === 'fork') {
      btn.append(el(doc, 'span', 'branch-pos', `@${meta.fork_position}`));
      btn.append(el(doc, 'span', 'branch-forced', visibleText(meta.forced ?? '', 14) || '∅'));
    } else if (meta.kind === 'intervention') {
      btn.append(el(doc, 'span', 'branch-intervention', interventionText(meta.intervention, t) || t('tree.intervention')));
    } else {
      btn.append(el(doc, 'span', 'branch-root', t(meta.kind === 'score' ? 'tree.scoreRoot' : 'tree.root')));
    }
    btn.append(el(doc, 'span', 'branch-preview', visibleText(meta.preview, 48)));
    btn.title = runLabel(meta, t);
    row.append(btn);
    if ((meta.kind === 'fork' || meta.kind === 'intervention') && meta.parent_id) {
      const cmp = el(doc, 'button', 'branch-compare', t('tree.compare'));
      cmp.type = 'button';
      cmp.setAttribute('data-testid', 'compare-parent');
      cmp.dataset.branchId = meta.run_id;
      cmp.title = t('tree.compareTitle');
      row.append(cmp);
    }
    list.append(row);
  }
  root.replaceChildren(el(doc, 'div', 'tree-title', t('tree.title')), list);
}
