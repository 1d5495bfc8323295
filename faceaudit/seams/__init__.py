"""The files where faceaudit's stages meet, each defined once and read by the definition that writes it:
the predictions table (anything that classifies faces -> the audit) and the run folder (training -> inference,
audit and reports). ``audit.json`` is defined by :mod:`faceaudit.auditing.result`."""
