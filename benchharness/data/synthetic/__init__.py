"""The synthetic world in the VOCdevkit layout: images, boxes and masks (:mod:`.world`), its SBD
(:mod:`.sbd`), precomputed selective search (:mod:`.proposals`), video clips (:mod:`.clips`) and
their sound (:mod:`.sound`)."""
