"""ColonDepth: depth and 3D colon surfaces from colonoscopy video.

Importing the package is cheap: it does not import torch, pyrender, streamlit or pyvista.
"""

__version__ = "0.1.0"
