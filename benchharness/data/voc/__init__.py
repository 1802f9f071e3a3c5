"""PASCAL VOC on disk: the VOCdevkit readers (:mod:`.devkit`), SBD (:mod:`.sbd`), the class
names and palette (:mod:`.classes`), ``data check`` (:mod:`.check`), ``data fetch``
(:mod:`.fetch`) and a data root's identity (:mod:`.identity`)."""
