"""From scores to a choice of model (paper 003 §4.4): a library of known datasets with model
families trained on them (``library``, its recipe in ``recipe``) and the selection of families
for a new dataset by its PID (``select``)."""
