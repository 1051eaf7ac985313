"""Measures: image quality (PSNR/SSIM/LPIPS), face identity, head pose, expression and seam measures of
swapped and rendered frames."""
