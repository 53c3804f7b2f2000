// A ringtone made with Web Audio (no audio file to ship): two tones, on 1 s, off 2 s.

export class Ringtone {
  constructor() {
    this.ctx = null;
    this.timer = null;
  }

  start() {
    if (this.timer) return;
    try {
      this.ctx = this.ctx ?? new AudioContext();
      this.ctx.resume?.().catch(() => {});
    } catch {
      return;
    }
    const ring = () => {
      const ctx = this.ctx;
      const gain = ctx.createGain();
      gain.gain.value = 0.08;
      gain.connect(ctx.destination);
      for (const freq of [440, 480]) {
        const osc = ctx.createOscillator();
        osc.frequency.value = freq;
        osc.connect(gain);
        osc.start();
        osc.stop(ctx.currentTime + 1);
      }
    };
    ring();
    this.timer = setInterval(ring, 3000);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }
}
