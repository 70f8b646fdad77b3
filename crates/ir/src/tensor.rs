//! Dense tensors: the values fed to, held in (constants) and returned from graphs.

use crate::{DType, Error, Result, Shape};

/// Element storage of a tensor, row-major.
#[derive(Clone, PartialEq, Debug)]
pub enum Data {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
}

/// A dense row-major tensor with its shape.
#[derive(Clone, PartialEq, Debug)]
pub struct Tensor {
    shape: Shape,
    data: Data,
}

impl Tensor {
    /// A tensor from a shape and matching data; errors when the element count differs.
    pub fn new(shape: impl Into<Shape>, data: Data) -> Result<Self> {
        let shape = shape.into();
        let len = match &data {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
        };
        if shape.checked_numel() != Some(len) {
            let expected = shape.checked_numel().unwrap_or(usize::MAX);
            return Err(Error::DataLength { shape, expected, got: len });
        }
        Ok(Tensor { shape, data })
    }
    /// An f32 tensor.
    pub fn f32(shape: impl Into<Shape>, values: Vec<f32>) -> Result<Self> {
        Self::new(shape, Data::F32(values))
    }
    /// An f64 tensor.
    pub fn f64(shape: impl Into<Shape>, values: Vec<f64>) -> Result<Self> {
        Self::new(shape, Data::F64(values))
    }
    /// A tensor of one repeated value; errors when the shape's element count overflows.
    pub fn full(shape: impl Into<Shape>, dtype: DType, value: f64) -> Result<Self> {
        let shape = shape.into();
        let n =
            shape.checked_numel().ok_or(Error::DataLength { shape: shape.clone(), expected: usize::MAX, got: 0 })?;
        let data = match dtype {
            DType::F32 => Data::F32(vec![value as f32; n]),
            DType::F64 => Data::F64(vec![value; n]),
        };
        Ok(Tensor { shape, data })
    }
    /// A scalar (rank-0) tensor.
    pub fn scalar(dtype: DType, value: f64) -> Self {
        let data = match dtype {
            DType::F32 => Data::F32(vec![value as f32]),
            DType::F64 => Data::F64(vec![value]),
        };
        Tensor { shape: Shape::scalar(), data }
    }
    /// A tensor of the given dtype from f64 values (rounded when the dtype is f32).
    pub fn from_f64(shape: impl Into<Shape>, dtype: DType, values: &[f64]) -> Result<Self> {
        let data = match dtype {
            DType::F32 => Data::F32(values.iter().map(|&v| v as f32).collect()),
            DType::F64 => Data::F64(values.to_vec()),
        };
        Self::new(shape, data)
    }
    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self.data {
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
        }
    }
    /// The element storage.
    pub fn data(&self) -> &Data {
        &self.data
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.numel()
    }
    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The elements widened to f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::F64(v) => v.clone(),
        }
    }
    /// The same values in another dtype.
    pub fn cast(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        let data = match (&self.data, dtype) {
            (Data::F64(v), DType::F32) => Data::F32(v.iter().map(|&x| x as f32).collect()),
            (Data::F32(v), DType::F64) => Data::F64(v.iter().map(|&x| x as f64).collect()),
            _ => self.data.clone(),
        };
        Tensor { shape: self.shape.clone(), data }
    }
    /// The single value of a one-element tensor, as f64.
    pub fn item(&self) -> Option<f64> {
        (self.len() == 1).then(|| self.to_f64_vec()[0])
    }
}

impl std::fmt::Display for Tensor {
    /// Prints `f32[2,3] [1, 2, 3, ...]`, eliding the middle of long tensors.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.to_f64_vec();
        write!(f, "{}{} [", self.dtype(), self.shape)?;
        let show = |f: &mut std::fmt::Formatter<'_>, i: usize| -> std::fmt::Result {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{:.6}", v[i])
        };
        if v.len() <= 12 {
            for i in 0..v.len() {
                show(f, i)?;
            }
        } else {
            for i in 0..6 {
                show(f, i)?;
            }
            write!(f, ", ...")?;
            for i in v.len() - 3..v.len() {
                show(f, i)?;
            }
        }
        write!(f, "]")
    }
}
