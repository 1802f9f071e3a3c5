"""Images and clips as training batches, shared by the methods and the tasks: folders and pools
(:mod:`.folders`, :mod:`.pretext_pool`, :mod:`.labelled`), the decoded-image cache
(:mod:`.image_cache`), streaming from disk (:mod:`.streaming`), video clips (:mod:`.video`,
:mod:`.clip_cache`, :mod:`.clip_stream`, :mod:`.clip_source`) and the batched crops
(:mod:`.transforms`)."""
