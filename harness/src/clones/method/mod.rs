//! The clone methods. A new one is a file here implementing
//! [`crate::clones::recipe::CloneMethod`], a variant of [`clonesafe_metadata::Method`], and one
//! line in [`of`].

pub mod cold_boot;
pub mod image_copy;
pub mod live;
pub mod shared_ram;

use super::recipe::CloneMethod;
use clonesafe_metadata::Method;

pub fn of(m: Method) -> &'static dyn CloneMethod {
    match m {
        Method::ColdBoot => &cold_boot::ColdBoot,
        Method::ImageCopy => &image_copy::ImageCopy,
        Method::Live => &live::Live,
        Method::SharedRam => &shared_ram::SharedRam,
    }
}
