"""The core floor every stage builds on: typed errors (``exceptions``), hashing, atomic writes (``io``),
the store writer lock (``lock``), the store layout (``layout.StoreLayout``) and the shared words
(``vocabulary``). It imports no stage; import its modules directly (``from dltr.core.layout import
StoreLayout``), this package itself re-exports nothing so that importing one module stays cheap."""
