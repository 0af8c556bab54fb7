"""The METER vision-language adapter (paper §2.5, §3.7): MLM + ITM pretraining, VQA fine-tuning and its official
accuracy, captioning. The model lives in :mod:`florence_lib.models.meter`; this package holds the tasks."""
