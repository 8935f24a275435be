"""rlx's Hydra launcher for Ray: ``hydra/launcher=rlx_ray`` (ray_launcher.py)."""
