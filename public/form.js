// Keeps the CPU and memory fields within the chosen machine's limits.
for (const radio of document.querySelectorAll('input[name=machine]')) {
  radio.addEventListener('change', () => {
    const cpus = document.querySelector('input[name=cpus]');
    const mem = document.querySelector('input[name=memoryMiB]');
    cpus.max = radio.dataset.cpus;
    cpus.value = Math.min(Number(radio.dataset.cpusDefault), Number(radio.dataset.cpus));
    mem.max = radio.dataset.memory;
    mem.value = Math.min(Number(radio.dataset.memoryDefault), Number(radio.dataset.memory));
  });
}
