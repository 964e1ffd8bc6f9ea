"""Serving: between the routes and the jobs. A validated request and its inputs become a job (or
several, all or none), with rollback when they are not taken; finished jobs are rendered on request.
Routes only parse, call and render. Torch-free: the lanes behind the queue do the engine's work."""
