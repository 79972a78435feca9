// The page's markup and style (as strings, so that every install form carries them: a checkout, JSR, npm).

export const INDEX_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>FLANNEL: chest X-ray classification in the browser</title>
<link rel="stylesheet" href="style.css">
<link rel="icon" href="data:,">
<script type="module" src="page.js"></script>
</head>
<body>
<header>
  <h1>FLANNEL <span class="sub">chest X-ray ensemble, in this browser</span></h1>
  <p class="warning" role="note"><strong>Not for clinical use.</strong> A research demonstration of a software
  library: the models largely recognise which collection an image comes from.
  <button type="button" id="card-open">Model card</button></p>
</header>
<main>
  <section aria-labelledby="input-title">
    <h2 id="input-title">Images</h2>
    <div id="drop" class="drop">
      <p>Drop PNG or JPEG chest X-rays or a folder here, or choose them:</p>
      <p>
        <label class="button" for="files">Choose files</label>
        <input id="files" type="file" multiple accept=".png,.jpg,.jpeg,image/png,image/jpeg">
        <label class="button" for="folder">Choose a folder</label>
        <input id="folder" type="file" webkitdirectory multiple>
      </p>
    </div>
    <p id="status" role="status" aria-live="polite">Starting...</p>
    <dl id="backend" class="facts"></dl>
  </section>
  <section aria-labelledby="results-title">
    <h2 id="results-title">Results</h2>
    <p><a id="csv" class="button" download="predictions.csv" aria-disabled="true">Download CSV</a></p>
    <div class="scroll">
      <table id="results">
        <caption>Class probabilities of each image (the ensemble's, averaged over the folds)</caption>
        <thead><tr id="results-head"></tr></thead>
        <tbody></tbody>
      </table>
    </div>
  </section>
  <section aria-labelledby="cam-title" id="cam-section" hidden>
    <h2 id="cam-title">Class activation maps</h2>
    <p id="cam-caption"></p>
    <img id="cam" alt="">
  </section>
</main>
<dialog id="card" aria-labelledby="card-title">
  <h2 id="card-title">Model card</h2>
  <pre id="card-text"></pre>
  <form method="dialog"><button>Close</button></form>
</dialog>
</body>
</html>
`;

export const STYLE_CSS = `:root { color-scheme: light dark; --accent: #1f5fa8; --bad: #a01c1c; }
* { box-sizing: border-box; }
body { font: 1rem/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 72rem; padding: 1rem; }
h1 { font-size: 1.6rem; margin: 0.2rem 0; }
h1 .sub { font-size: 1rem; font-weight: normal; }
h2 { font-size: 1.25rem; }
.warning { border-left: 0.3rem solid var(--bad); padding: 0.3rem 0.8rem; }
.drop { border: 0.15rem dashed currentColor; border-radius: 0.5rem; padding: 1rem; }
.drop.over { border-color: var(--accent); outline: 0.2rem solid var(--accent); }
input[type=file] { position: absolute; width: 1px; height: 1px; opacity: 0; }
.button, button { display: inline-block; font: inherit; padding: 0.3rem 0.8rem; border: 0.1rem solid var(--accent);
  border-radius: 0.3rem; background: transparent; color: inherit; cursor: pointer; text-decoration: none; }
input[type=file]:focus-visible + .button, label.button:focus-within, .button:focus-visible, button:focus-visible {
  outline: 0.2rem solid var(--accent); outline-offset: 0.1rem; }
#files:focus-visible ~ label[for=files], #folder:focus-visible ~ label[for=folder] { outline: 0.2rem solid var(--accent); }
a.button[aria-disabled=true] { opacity: 0.5; pointer-events: none; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.1rem 1rem; }
.facts dt { font-weight: bold; }
.facts dd { margin: 0; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
caption { text-align: left; font-style: italic; }
th, td { border-bottom: 0.05rem solid #8888; padding: 0.2rem 0.5rem; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; overflow-wrap: anywhere; min-width: 10rem; }
td { white-space: nowrap; }
td:first-child, tr.error td, tr.learners td { white-space: normal; }
tr.learners > td { text-align: left; padding: 0.3rem 0 0.8rem 2rem; }
td.predicted { font-weight: bold; text-align: left; }
tr.error td { color: var(--bad); text-align: left; }
tr.learners table { font-size: 0.9rem; margin: 0.3rem 0; width: auto; }
#cam { max-width: 100%; height: auto; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; }
dialog { max-width: min(60rem, 95vw); max-height: 90vh; overflow: auto; }
`;
