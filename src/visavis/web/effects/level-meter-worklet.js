// AudioWorklet processor behind level-meter.js: the RMS of each input channel over
// consecutive windows, posted to the page in batches (no samples leave the worklet).
class LevelMeter extends AudioWorkletProcessor {
  constructor({ processorOptions }) {
    super();
    this.window = Math.max(1, Math.round((processorOptions.windowMs * sampleRate) / 1000));
    this.batch = processorOptions.batch;
    this.sums = [];
    this.count = 0;
    this.levels = [];
  }

  process(inputs) {
    const input = inputs[0];
    if (!input.length) return true;
    for (let i = 0; i < input[0].length; i++) {
      for (let c = 0; c < input.length; c++) {
        const x = input[c][i];
        this.sums[c] = (this.sums[c] ?? 0) + x * x;
      }
      if (++this.count === this.window) {
        this.levels.push(this.sums.map((sum) => Math.sqrt(sum / this.window)));
        this.sums = [];
        this.count = 0;
        if (this.levels.length >= this.batch) {
          this.port.postMessage(this.levels);
          this.levels = [];
        }
      }
    }
    return true;
  }
}
registerProcessor("visavis-level-meter", LevelMeter);
