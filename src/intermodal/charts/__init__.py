"""The parts a report section is made of: a run directory's data (``run``), figures
(``figures``) and HTML pieces (``html``). Measures draw their own sections with them; the
``report`` package puts the sections on a page."""
