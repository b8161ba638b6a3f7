"""Rotations and poses: conventions against SciPy (an independent xyzw implementation), round trips
near 0 and pi, closed-form inverse, batch dims, dtype/device, and float64 gradchecks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from colondepth.geometry.pose import (
    axis_angle_to_matrix,
    compose_pose,
    invert_pose,
    make_pose,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    pose_from_axis_angle_translation,
    pose_from_translation_quaternion,
    pose_to_translation_quaternion,
    quaternion_to_matrix,
    relative_pose,
    rotation_angle,
    transform_points,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = torch.float64


def _random_axis_angles(n: int, angles, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    axes = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=F64), dim=-1)
    return axes * torch.as_tensor(angles, dtype=F64).reshape(-1, 1)


# -- conventions -----------------------------------------------------------------------------------
def test_axis_angle_right_hand_rule_about_z():
    R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, 0.6], dtype=F64))
    x = R @ torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    np.testing.assert_allclose(x.numpy(), [math.cos(0.6), math.sin(0.6), 0.0], atol=1e-12)


def test_quaternion_is_xyzw_like_tum_and_scipy():
    theta = 0.8
    q = torch.tensor([0.0, 0.0, math.sin(theta / 2), math.cos(theta / 2)], dtype=F64)  # x y z w
    R = quaternion_to_matrix(q)
    np.testing.assert_allclose(R[:2, 0].numpy(), [math.cos(theta), math.sin(theta)], atol=1e-12)
    # The identity in xyzw is (0, 0, 0, 1); read as wxyz it would be a half turn.
    np.testing.assert_allclose(quaternion_to_matrix(torch.tensor([0.0, 0.0, 0.0, 1.0])).numpy(), np.eye(3), atol=1e-7)
    np.testing.assert_allclose(matrix_to_quaternion(R).numpy(), q.numpy(), atol=1e-12)


def test_against_scipy_random_rotations():
    aa = _random_axis_angles(50, torch.linspace(0.01, 3.1, 50), seed=1)
    R = axis_angle_to_matrix(aa)
    np.testing.assert_allclose(R.numpy(), Rotation.from_rotvec(aa.numpy()).as_matrix(), atol=1e-12)
    q = matrix_to_quaternion(R)
    q_ref = Rotation.from_matrix(R.numpy()).as_quat()  # xyzw
    q_ref = np.where(q_ref[:, 3:4] < 0, -q_ref, q_ref)
    np.testing.assert_allclose(q.numpy(), q_ref, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(q).numpy(), R.numpy(), atol=1e-12)
    np.testing.assert_allclose(matrix_to_axis_angle(R).numpy(), aa.numpy(), atol=1e-10)


def test_matrix_to_quaternion_has_non_negative_w_for_large_angles():
    aa = _random_axis_angles(20, torch.linspace(2.5, math.pi - 1e-4, 20), seed=2)
    q = matrix_to_quaternion(axis_angle_to_matrix(aa))
    assert (q[:, 3] >= 0).all()
    np.testing.assert_allclose(torch.linalg.vector_norm(q, dim=-1).numpy(), 1.0, atol=1e-12)


def test_quaternion_scale_invariant():
    q = torch.tensor([0.1, -0.3, 0.2, 0.9], dtype=F64)
    np.testing.assert_allclose(quaternion_to_matrix(3.0 * q).numpy(), quaternion_to_matrix(q).numpy(), atol=1e-14)


# -- round trips -------------------------------------------------------------------------------------
@pytest.mark.parametrize("angle", [0.0, 1e-12, 1e-8, 1e-5, 1e-3, 0.5, 2.0, math.pi - 1e-3, math.pi - 1e-6])
def test_axis_angle_round_trip(angle):
    aa = _random_axis_angles(8, [angle] * 8, seed=3)
    R = axis_angle_to_matrix(aa)
    np.testing.assert_allclose((R @ R.transpose(-1, -2)).numpy(), np.broadcast_to(np.eye(3), (8, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(torch.linalg.det(R).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(matrix_to_axis_angle(R).numpy(), aa.numpy(), atol=2e-9, rtol=0)
    np.testing.assert_allclose(rotation_angle(R).numpy(), angle, atol=2e-9)
    q = matrix_to_quaternion(R)
    np.testing.assert_allclose(quaternion_to_matrix(q).numpy(), R.numpy(), atol=1e-12)


def test_round_trip_at_exactly_pi_up_to_sign():
    aa = _random_axis_angles(8, [math.pi] * 8, seed=4)
    R = axis_angle_to_matrix(aa)
    back = matrix_to_axis_angle(R)
    same = torch.minimum((back - aa).abs().amax(-1), (back + aa).abs().amax(-1))
    assert same.max() < 1e-7
    np.testing.assert_allclose(axis_angle_to_matrix(back).numpy(), R.numpy(), atol=1e-12)
    q = matrix_to_quaternion(R)
    np.testing.assert_allclose(q[:, 3].numpy(), 0.0, atol=1e-7)
    np.testing.assert_allclose(quaternion_to_matrix(q).numpy(), R.numpy(), atol=1e-12)


def test_make_pose_and_transform_points():
    R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=F64))
    t = torch.tensor([10.0, 20.0, 30.0], dtype=F64)
    T = make_pose(R, t)
    assert T.shape == (4, 4)
    np.testing.assert_allclose(T[3].numpy(), [0, 0, 0, 1])
    p = torch.tensor([[[1.0, 2.0, 3.0]]], dtype=F64)
    # R maps x->y, y->-x: (1, 2, 3) -> (-2, 1, 3), then + t.
    np.testing.assert_allclose(transform_points(T[None], p).numpy(), [[[8.0, 21.0, 33.0]]], atol=1e-12)


def test_pose_from_axis_angle_translation_rotates_then_translates():
    vec6 = torch.tensor([0.0, 0.0, math.pi / 2, 1.0, 0.0, 0.0], dtype=F64)
    T = pose_from_axis_angle_translation(vec6)
    p = transform_points(T[None], torch.tensor([[[1.0, 0.0, 0.0]]], dtype=F64))
    np.testing.assert_allclose(p.numpy(), [[[1.0, 1.0, 0.0]]], atol=1e-12)


def test_invert_compose_is_identity():
    g = torch.Generator().manual_seed(5)
    vec = torch.randn(4, 6, generator=g, dtype=F64) * torch.tensor([1, 1, 1, 50, 50, 50], dtype=F64)
    b_from_a = pose_from_axis_angle_translation(vec)
    eye = torch.eye(4, dtype=F64).expand(4, 4, 4)
    np.testing.assert_allclose(compose_pose(invert_pose(b_from_a), b_from_a).numpy(), eye.numpy(), atol=1e-12)
    np.testing.assert_allclose(compose_pose(b_from_a, invert_pose(b_from_a)).numpy(), eye.numpy(), atol=1e-12)
    np.testing.assert_allclose(invert_pose(b_from_a).numpy(), torch.linalg.inv(b_from_a).numpy(), atol=1e-12)
    # Points go a -> b -> a.
    pts = torch.randn(4, 7, 3, generator=g, dtype=F64) * 30
    back = transform_points(invert_pose(b_from_a), transform_points(b_from_a, pts))
    np.testing.assert_allclose(back.numpy(), pts.numpy(), atol=1e-11)


def test_compose_order_is_right_to_left():
    c_from_b = make_pose(torch.eye(3, dtype=F64), torch.tensor([0.0, 0.0, 5.0], dtype=F64))
    b_from_a = make_pose(axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=F64)),
                         torch.zeros(3, dtype=F64))
    p_a = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=F64)
    # a -> b rotates x to y, then b -> c adds z = 5.
    p_c = transform_points(compose_pose(c_from_b, b_from_a)[None], p_a)
    np.testing.assert_allclose(p_c.numpy(), [[[0.0, 1.0, 5.0]]], atol=1e-12)


def test_relative_pose_from_world_poses():
    world_from_a = pose_from_axis_angle_translation(torch.tensor([0.1, -0.2, 0.3, 5.0, 6.0, 7.0], dtype=F64))
    world_from_b = pose_from_axis_angle_translation(torch.tensor([-0.3, 0.2, 0.05, -1.0, 2.0, 9.0], dtype=F64))
    b_from_a = relative_pose(world_from_b, world_from_a)
    p_a = torch.tensor([[[1.0, 2.0, 30.0]]], dtype=F64)
    p_world = transform_points(world_from_a[None], p_a)
    expected_b = transform_points(invert_pose(world_from_b)[None], p_world)
    np.testing.assert_allclose(transform_points(b_from_a[None], p_a).numpy(), expected_b.numpy(), atol=1e-12)


def test_tum_translation_quaternion_round_trip():
    t = torch.tensor([1.5, -2.0, 30.0], dtype=F64)
    q = torch.nn.functional.normalize(torch.tensor([0.2, -0.1, 0.4, 0.8], dtype=F64), dim=0)
    T = pose_from_translation_quaternion(t, q)
    t2, q2 = pose_to_translation_quaternion(T)
    np.testing.assert_allclose(t2.numpy(), t.numpy())
    np.testing.assert_allclose(q2.numpy(), q.numpy(), atol=1e-12)
    np.testing.assert_allclose(T[:3, :3].numpy(), Rotation.from_quat(q.numpy()).as_matrix(), atol=1e-12)


# -- shapes, dtypes, devices ------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_dims_dtype_device_preserved(device, dtype):
    aa = torch.full((2, 5, 3), 0.3, dtype=dtype, device=device)
    R = axis_angle_to_matrix(aa)
    assert R.shape == (2, 5, 3, 3) and R.dtype == dtype and R.device.type == device
    assert matrix_to_axis_angle(R).shape == (2, 5, 3)
    q = matrix_to_quaternion(R)
    assert q.shape == (2, 5, 4) and q.dtype == dtype and q.device.type == device
    assert quaternion_to_matrix(q).shape == (2, 5, 3, 3)
    T = pose_from_axis_angle_translation(torch.zeros(2, 5, 6, dtype=dtype, device=device))
    assert T.shape == (2, 5, 4, 4) and T.dtype == dtype and T.device.type == device
    assert invert_pose(T).shape == (2, 5, 4, 4)
    assert compose_pose(T, T).shape == (2, 5, 4, 4)
    pts = torch.zeros(2, 5, 7, 3, dtype=dtype, device=device)
    out = transform_points(T, pts)
    assert out.shape == (2, 5, 7, 3) and out.dtype == dtype and out.device.type == device


@pytest.mark.parametrize(
    "call, shape",
    [
        (axis_angle_to_matrix, (4,)),
        (matrix_to_axis_angle, (3, 4)),
        (quaternion_to_matrix, (3,)),
        (invert_pose, (3, 4)),
        (pose_from_axis_angle_translation, (7,)),
    ],
)
def test_bad_shapes_raise(call, shape):
    with pytest.raises(ValueError, match="must have shape"):
        call(torch.zeros(shape))


# -- gradients ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("angle", [1e-4, 0.7, 3.0])
def test_gradcheck_axis_angle_and_back(angle):
    aa = _random_axis_angles(2, [angle, angle], seed=6).requires_grad_(True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (aa,))
    R = axis_angle_to_matrix(aa.detach()).requires_grad_(True)
    assert torch.autograd.gradcheck(matrix_to_axis_angle, (R,))
    assert torch.autograd.gradcheck(matrix_to_quaternion, (R,))


def test_gradcheck_axis_angle_at_zero_is_finite():
    aa = torch.zeros(1, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (aa,))
    R = axis_angle_to_matrix(aa)
    R.sum().backward()
    assert torch.isfinite(aa.grad).all()


def test_gradcheck_quaternion_and_pose_ops():
    g = torch.Generator().manual_seed(7)
    q = torch.randn(3, 4, generator=g, dtype=F64).requires_grad_(True)
    assert torch.autograd.gradcheck(quaternion_to_matrix, (q,))
    vec = (torch.randn(3, 6, generator=g, dtype=F64) * 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(pose_from_axis_angle_translation, (vec,))
    T = pose_from_axis_angle_translation(vec.detach()).requires_grad_(True)
    T2 = pose_from_axis_angle_translation(vec.detach().flip(0)).requires_grad_(True)
    pts = torch.randn(3, 5, 3, generator=g, dtype=F64).requires_grad_(True)
    assert torch.autograd.gradcheck(compose_pose, (T, T2))
    assert torch.autograd.gradcheck(transform_points, (T, pts))
    # invert_pose is exact only for rigid poses: check it through the parametrisation.
    assert torch.autograd.gradcheck(lambda v: invert_pose(pose_from_axis_angle_translation(v)), (vec,))
