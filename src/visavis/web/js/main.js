// Entry point: build the app, render it, and expose it for tests (window.visavis).
import { html, render } from "./ui.js";
import { App } from "./app.js";
import { Root } from "./views/root.js";
import { registerServiceWorker } from "./core/push.js";
import { installEffects } from "../effects/client.js";

const app = new App();
window.visavis = app;
installEffects(app);
render(html`<${Root} app=${app} />`, document.getElementById("root"));
app.start();
window.addEventListener("focus", () => app.refreshHistory());
registerServiceWorker();
