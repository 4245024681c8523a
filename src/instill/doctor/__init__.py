"""`instill doctor`: check a config, its model, template and data, and the machine, before (or after) a run.

Each check is one PASS / WARN / FAIL (or SKIP) line with its fix; the exit status is 0 / 1 / 2 like a
linter. Modules: `environment` (versions, device, dtypes, threads), `resources` (memory estimate,
disk), `template` (label mask, prefix stability, stop token, eos / pad), `data` (what `instill data
check` reports), `smells` (config settings that usually mean a mistake), `saved` (a finished run's
saved and exported templates), `generation` (does one greedy reply stop), `run` (the order), `table`.
"""
