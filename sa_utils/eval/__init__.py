"""Reading a model: classifier metrics, entropy, Frechet distance and rates with intervals
(:mod:`.metrics`), detectors by name (:mod:`.detectors`), and a meter of live tensor memory
(:mod:`.memory`). Nothing here trains or runs an experiment."""
