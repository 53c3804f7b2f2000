// Entry point: build the app, render it, and expose it for tests (window.visavis).
import { html, render } from "./ui.js";
import { App } from "./app.js";
import { Root } from "./views/root.js";
import { registerServiceWorker } from "./core/push.js";
import { installEffects } from "../effects/client.js";

// (performance marks: when the module graph had run and when the first screen was on
// the page, the time to interactive benchmarks/web_client.py reports)
performance.mark("visavis:modules-run");
const app = new App();
window.visavis = app;
installEffects(app);
render(html`<${Root} app=${app} />`, document.getElementById("root"));
performance.mark("visavis:rendered");
app.start();
window.addEventListener("focus", () => app.refreshHistory());
registerServiceWorker();
