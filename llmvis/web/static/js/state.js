// Every piece of the page's state, with its starting value: the one list of what the store
// (store.js) holds. Modules read it with store.get() and change it with store.set(patch).

/** The page's state at load. Pure. */
export function initialState() {
  return {
    // ---- server and run ----
    model: null, // /api/model answer (layers, heads, limits), null until it arrives
    run: null, // the run on show (null before the first one and while a new one streams)
    labels: { short: [], long: [] }, // axis / tooltip labels of run.tokens (12 and 32 characters)
    selected: null, // the selected token position
    scrollToSelected: false, // whether that selection scrolls its chip into view
    lastSeed: null, // the seed of the run on show, for the "reuse seed" button
    segments: null, // {runId, list}: chat segment of every position of the run on show
    sessionRuns: new Map(), // run_id -> runMeta of every run this page has shown (tree, diff)
    // ---- left column ----
    form: null, // the form's raw values: {prompt, system, temperature, top_k, top_p, max_new_tokens, seed}
    mode: 'generate', // 'generate' | 'score'
    scoreText: '', // the text to score
    scoreTemplate: false, // wrap it in the chat template
    busy: null, // null, or what the page waits for: 'generate' | 'fork' | 'score'
    streaming: false, // a generation is streaming
    stopping: false, // Stop was pressed for it
    error: '', // the error line
    estimate: null, // /api/estimate answer for the form, or null
    history: { enabled: true, rows: [], usage: null, loads: 0 }, // /api/history, and how often it loaded
    // ---- conversation ----
    metric: 'prob', // chip colour: 'prob' | 'entropy' | 'rank' | 'gltr'
    // ---- views ----
    view: 'attention', // the tab on show
    shown: { view: null, meta: {} }, // what the chart last drew (chart clicks are read against it)
    layer: 0, // attention layer
    head: 'mean', // attention head: 'mean' | 'max' | number
    scale: 'auto', // attention colour scale: 'auto' (√, log on long runs) | 'sqrt' | 'linear' | 'log'
    attnRange: 'all', // attention: 'all' (pooled) | 'window' (128 around the selection)
    attnZoom: null, // attention zoom dragged on the heatmap: {runId, q0, q1, k0, k1} (half-open), or null
    topN: 20, // candidates in the probabilities view
    projLayer: null, // projection layer (0 = embeddings); the middle layer once the model is known
    lensMetric: 'prob', // logit lens colour: 'prob' | 'rank' | 'entropy'
    lensRange: 'generated', // logit lens columns: 'generated' | 'all'
    lensConfirmed: null, // run id whose long lens range the user asked for after seeing its time estimate
    headsMode: 'grid', // Heads tab: 'grid' | 'row' | 'segments'
    headsMetric: 'entropy', // head grid statistic
    rowHead: 'mean', // head of the row view
    samplerTopN: 20, // candidates in the sampler view
    diffA: null, // run ids compared in the diff view
    diffB: null,
    diffAlign: 'position', // diff alignment: 'position' | 'edit' (token edit distance) | 'auto' (issue 15)
    // ---- interventions (intervene.js) ----
    ablateHeads: [], // [[layer, head], ...] picked in the Heads grid to ablate
    headsPick: false, // a click on the Heads grid picks heads (else it opens the head in Attention)
    ablateMode: 'zero', // 'zero' | 'mean'
    ablateTarget: 'heads', // 'heads' (the picked ones) | 'mlp' | 'attention' (of ablateLayer)
    ablateLayer: 0, // layer whose MLP / attention is ablated
    ablateFree: false, // generate freely from the divergence point (else the parent's tokens are teacher-forced)
    patchForm: { clean: 'The Eiffel Tower is in', corrupted: 'The Colosseum is in', metric: 'logit_diff', tokenA: ' Paris', tokenB: ' Rome', position: -1, sweep: 'residual', headPosition: 'all' }, // + cleanCount, corruptedCount (undefined: not counted yet)
    patchStart: 0, // how many sweeps were started (a new number runs one)
    patchResult: null, // {seq, result}: the last finished sweep
    steerForm: { layer: null, source: 'mean_diff', positive: 'I love this\nWonderful, great', negative: 'I hate this\nAwful, terrible', token: ' happy', direction: '', alphas: '-8, 0, 8', from: '' },
    steerResult: null, // {parentId, layer, norm, items: [{alpha, runId, text, divergence, effect}]}
    // ---- Explain tab (explain.js) ----
    explainMode: 'logit', // 'logit' | 'inputs' | 'flow'
    explainTarget: null, // token id explained at the selected position (null: the token there)
    explainContrast: null, // token id of the contrast ("why not"), or null
    explainMethod: 'grad_x_input', // input attribution: 'grad_x_input' | 'integrated_gradients' | 'value_norm' | 'direct'
    explainSteps: 16, // integrated-gradients steps
    explainThreshold: 0.1, // information-flow edge threshold (the page starts above the API's 0.05: a readable graph)
    explainCandidates: null, // {runId, position, data}: /api/token_probs of the explained position
    explainEdge: null, // the flow edge last clicked (named in the info line)
  };
}
