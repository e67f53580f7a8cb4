"""Pipeline stages: concepts, twins, captions, images, judge, export (one module each)."""
